"""PGD-10 end to end on a CIFAR-style ResNet-18: advfast.pgd against a plain eager PyTorch loop and
torchattacks.PGD, L-inf eps=8/255, alpha=2/255, batch 32 of 3x32x32 in [0, 1], random start, eval mode.

The step is a small part of an attack on a real network (each step is a forward and an input-gradient
backward through the model), so this shows what the fused step buys end to end; ``model_only`` times the
10 forward+backward passes alone, the floor of any PGD-10. Random weights (seeded): timing does not depend
on them.

Before timing, each attack runs from x (no random start) and must give advfast.pgd's adversarial batch
(advfast.pgd must give the eager loop's). Bit for bit is expected: same gradient signs, same float32 step
(torchattacks ascends the mean loss instead of the sum, which scales the gradient but keeps its signs). At
most 0.1% of pixels may differ (a gradient entry near 0 whose sign flips when a GPU sums in another order);
``extra_info`` records whether the result was bit-exact.

torchattacks is optional (``pip install --no-deps torchattacks``; it needs no torchvision for PGD); its
variant is skipped when it does not import. Run from the repository root::

    .venv/bin/pytest benchmarks/bench_pgd.py --benchmark-json=benchmarks/results/pgd-cpu.json

``ADVFAST_BENCH_PGD_WIDTH`` sets the ResNet's base width: default 16 (the ResNet-18 layout at a quarter of
the channels, 0.7M parameters, ~0.1 s per forward+backward on one core here, so the file runs in well under
a minute on 2 cores); 64 is the standard ResNet-18 (11.2M parameters, ~10x the time per pass, a few minutes
for the file). The model's name in ``extra_info`` says which. Rounds follow ``--benchmark-min-rounds`` and
``--benchmark-max-time`` as in bench_step.py.

On CUDA each attack is also timed between CUDA events (``extra_info["device_median_s"]``, which report.py
uses): from the attack's first kernel to its last, without the final synchronisation's latency. The attack is
a Python loop, so this still includes the time the GPU waits for the host between launches, as a user's
attack does.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import advfast

EPS, ALPHA, STEPS, BATCH, CLASSES = 8 / 255, 2 / 255, 10, 32, 10
WIDTH = int(os.environ.get("ADVFAST_BENCH_PGD_WIDTH", "16"))
VARIANTS = ("advfast", "eager_loop", "torchattacks", "model_only")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and advfast.has_cuda_kernels() else [])
PARAMS = [
    pytest.param(device, variant, id=f"{device}-{variant}", marks=[pytest.mark.cuda] if device == "cuda" else [])
    for device in DEVICES
    for variant in VARIANTS
]


# ---- a CIFAR-style ResNet-18 (He et al., 2016; 3x3 stem, no max-pool, as in the CIFAR literature) ------


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a (projected when the shape changes) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet18(width: int = 64, classes: int = CLASSES) -> nn.Sequential:
    """ResNet-18 for 3x32x32 inputs: a 3x3 stem, four stages of two blocks (width, 2, 4, 8 x width
    channels; stride 2 from the second stage), global average pooling, a linear classifier."""
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    cin = width
    for stage, cout in enumerate((width, 2 * width, 4 * width, 8 * width)):
        for block in range(2):
            layers.append(BasicBlock(cin, cout, 2 if stage > 0 and block == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


# ---- the attacks -----------------------------------------------------------------------------------------


def eager_pgd(model: nn.Module, x: Tensor, y: Tensor, *, random_start: bool) -> Tensor:
    """The PGD loop as usually written in plain PyTorch (the chain of torchattacks' PGD), with the summed
    per-sample cross-entropy that advfast.pgd ascends."""
    x_adv = x.clone()
    if random_start:
        x_adv = torch.clamp(x_adv + torch.empty_like(x).uniform_(-EPS, EPS), 0, 1)
    for _ in range(STEPS):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="none").sum()
        (grad,) = torch.autograd.grad(loss, x_adv)
        adv = x_adv.detach() + ALPHA * grad.sign()
        delta = torch.clamp(adv - x, min=-EPS, max=EPS)
        x_adv = torch.clamp(x + delta, min=0, max=1).detach()
    return x_adv


def model_only(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """The attack's forward and input-gradient backward passes without any step: the floor of PGD-10."""
    grad = x
    for _ in range(STEPS):
        x_in = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x_in), y, reduction="none").sum()
        (grad,) = torch.autograd.grad(loss, x_in)
    return grad


def import_torchattacks() -> ModuleType | None:
    """torchattacks, or None when it is not installed or fails to import (its import is not ours to keep
    warning-free, so warnings raised while importing it are ignored)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import torchattacks
        except Exception:  # an ImportError, or any error of its own dependencies
            return None
    return torchattacks


# ---- the benchmark ---------------------------------------------------------------------------------------


Problem = tuple[nn.Module, Tensor, Tensor]
# A gradient entry near 0 may change sign when the backward pass sums in another order (a GPU's
# convolution algorithms); such a flip moves one pixel by 2 * alpha and may nudge later steps. Exact
# equality is expected on the CPU; otherwise at most this fraction of pixels may differ.
MISMATCH_FRACTION = 1e-3


@pytest.fixture(scope="module")
def problem() -> Iterator[Callable[[str], Problem]]:
    """``problem(device)``: the model (eval mode, seeded random weights), a batch x in [0, 1], labels y."""
    cache: dict[str, Problem] = {}

    def get(device: str) -> Problem:
        if device not in cache:
            torch.manual_seed(0)
            model = resnet18(WIDTH).to(device).eval()
            gen = torch.Generator().manual_seed(1)
            x = torch.rand(BATCH, 3, 32, 32, generator=gen).to(device)
            y = torch.randint(0, CLASSES, (BATCH,), generator=gen).to(device)
            cache[device] = (model, x, y)
        return cache[device]

    yield get
    cache.clear()


def _timed(fn: Callable[[], Tensor], device: str) -> tuple[Tensor, float]:
    began = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - began


@pytest.mark.parametrize(("device", "variant"), PARAMS)
def test_pgd(
    benchmark: Any,
    rounds_for: Callable[[float], int],
    environment: Callable[[str], dict[str, Any]],
    problem: Callable[[str], Problem],
    cuda_events_time: Callable[..., Any],
    device: str,
    variant: str,
) -> None:
    """Check the attack from x against advfast.pgd, then time PGD-10 with a random start."""
    model, x, y = problem(device)

    def advfast_pgd(random_start: bool) -> Tensor:
        return advfast.pgd(model, x, y, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=random_start)

    attack: Callable[[bool], Tensor]
    if variant == "advfast":
        attack = advfast_pgd
    elif variant == "eager_loop":
        attack = lambda random_start: eager_pgd(model, x, y, random_start=random_start)  # noqa: E731
    elif variant == "torchattacks":
        torchattacks = import_torchattacks()
        if torchattacks is None:
            pytest.skip("torchattacks does not import here (pip install --no-deps torchattacks)")
        attacks = {rs: torchattacks.PGD(model, EPS, ALPHA, STEPS, random_start=rs) for rs in (False, True)}
        attack = lambda random_start: attacks[random_start](x, y)  # noqa: E731
    else:
        attack = lambda random_start: model_only(model, x, y)  # noqa: E731

    match: dict[str, Any] = {}
    if variant == "model_only":
        _, call_s = _timed(lambda: attack(True), device)
    else:
        # advfast is checked against the eager loop, every other attack against advfast.
        against = "eager_loop" if variant == "advfast" else "advfast"
        expected = eager_pgd(model, x, y, random_start=False) if variant == "advfast" else advfast_pgd(False)
        actual, call_s = _timed(lambda: attack(False), device)
        assert model.training is False, f"{variant} left the model in training mode"
        assert float((actual - x).abs().max()) <= EPS + 1e-6, f"{variant} left the eps-ball"
        differ = actual != expected
        match = {
            "checked_against": against,
            "bit_exact": not bool(differ.any()),
            "mismatch_fraction": float(differ.float().mean()),
            "max_abs_error": float((actual - expected).abs().max()),
        }
        assert match["mismatch_fraction"] <= MISMATCH_FRACTION, (
            f"{variant} from x differs from {against} in {match['mismatch_fraction']:.2%} of pixels "
            f"(by up to {match['max_abs_error']:.3g})"
        )

    def target() -> None:
        attack(True)
        if device == "cuda":
            torch.cuda.synchronize()

    benchmark.group = f"pgd-{device}"
    benchmark.extra_info.update(environment(device))
    benchmark.extra_info.update(
        {
            "attack": "pgd",
            "variant": variant,
            "model": f"resnet18-cifar-w{WIDTH}",
            "parameters": sum(p.numel() for p in model.parameters()),
            "batch": BATCH,
            "steps": STEPS,
            "eps": EPS,
            "alpha": ALPHA,
            **match,
        }
    )
    rounds = rounds_for(call_s)
    if device == "cuda":
        benchmark.extra_info.update(cuda_events_time(lambda: attack(True), rounds).extra_info())
    benchmark.pedantic(target, rounds=rounds, warmup_rounds=1, iterations=1)
