"""``advfast bench``: the fused steps against the eager PyTorch chains and a plain copy, on this machine.

A quick, self-contained check; the full comparison (torch.compile, peer libraries, sizes 1M-64M) lives in
the repository's ``benchmarks/``."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from advfast import ops, reference

EPS, ALPHA = 8 / 255, 2 / 255


def _time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _eager_linf(x_adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The chain peer libraries run (torchattacks' PGD): five allocating ops."""
    adv = x_adv + ALPHA * grad.sign()
    delta = torch.clamp(adv - x, min=-EPS, max=EPS)
    return torch.clamp(x + delta, min=0, max=1)


def run_bench(elements: int, device: str = "cpu", repeats: int = 20) -> str:
    """A Markdown table of median times and effective bandwidth (the 16 bytes per float32 element a fused step
    must move: read x_adv, grad, x; write x_adv)."""
    dev = torch.device(device)
    batch = max(1, elements // 3072)
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.rand(batch, 3, 32, 32, device=dev, generator=gen)
    grad = torch.randn(x.shape, device=dev, generator=gen)
    x_adv = (x + 0.01 * torch.randn(x.shape, device=dev, generator=gen)).clamp(0, 1)
    check = x_adv.clone()
    ops.linf_step_(check, grad, x, EPS, ALPHA)
    if not torch.equal(check, reference.linf_step(x_adv, grad, x, EPS, ALPHA)):
        raise AssertionError("the fused L-inf step differs from the reference; not timing a wrong kernel")
    work = x_adv.clone()
    source = torch.empty(2 * x.numel(), device=dev)
    target = torch.empty_like(source)
    rows = {
        "fused L-inf step (advfast)": lambda: ops.linf_step_(work, grad, x, EPS, ALPHA),
        "fused L2 step (advfast)": lambda: ops.l2_step_(work, grad, x, 0.5, 0.1),
        "eager L-inf chain (peers)": lambda: _eager_linf(work, grad, x),
        "copy of the same bytes (floor)": lambda: target.copy_(source),
    }
    seconds = {name: _time(fn, dev, repeats) for name, fn in rows.items()}
    moved = 16 * x.numel()
    floor = seconds["copy of the same bytes (floor)"]
    lines = [
        f"{x.numel() / 2**20:.0f}M float32 elements on {dev} ({torch.get_num_threads()} threads), median of {repeats}",
        "",
        "| variant | time (ms) | GB/s | x floor time |",
        "|---|--:|--:|--:|",
    ]
    for name, t in seconds.items():
        lines.append(f"| {name} | {t * 1e3:.3f} | {moved / t / 1e9:.1f} | {t / floor:.2f} |")
    return "\n".join(lines)
