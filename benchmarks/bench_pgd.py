"""PGD-10 end to end on a CIFAR-style ResNet-18: advfast.pgd against a plain eager PyTorch loop and
torchattacks.PGD, L-inf eps=8/255, alpha=2/255, batch 32 of 3x32x32 in [0, 1], random start, eval mode.

The step is a small part of an attack on a real network (each step is a forward and an input-gradient
backward through the model), so this shows what the fused step buys end to end; ``model_only`` times the
10 forward+backward passes alone, the floor of any PGD-10. Random weights (seeded): timing does not depend
on them. Before timing, advfast.pgd and the eager loop, both from x (no random start), must give the same
adversarial batch bit for bit (same loss, same gradient, same float32 step), and torchattacks (mean instead
of summed loss: the same gradient signs) must agree within 1e-6.

torchattacks is optional (``pip install --no-deps torchattacks``; it needs no torchvision for PGD); its
variant is skipped when it does not import. Run from the repository root::

    .venv/bin/pytest benchmarks/bench_pgd.py --benchmark-json=benchmarks/results/pgd-cpu.json

``ADVFAST_BENCH_PGD_WIDTH`` sets the ResNet's base width (default 64, the standard ResNet-18, about 11M
parameters; 16 makes every pass ~10x cheaper for a quick run). Rounds follow ``--benchmark-min-rounds`` and
``--benchmark-max-time`` as in bench_step.py.
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
WIDTH = int(os.environ.get("ADVFAST_BENCH_PGD_WIDTH", "64"))
VARIANTS = ("advfast", "eager_loop", "torchattacks", "model_only")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and advfast.has_cuda_kernels() else [])
PARAMS = [
    pytest.param(
        device, variant, id=f"{device}-{variant}", marks=[pytest.mark.cuda] if device == "cuda" else []
    )
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


@pytest.fixture(scope="module")
def problem() -> Iterator[dict[str, Any]]:
    """Per device: the model (eval mode, seeded random weights), a batch x in [0, 1] and labels y."""
    cache: dict[str, Any] = {}

    def get(device: str) -> tuple[nn.Module, Tensor, Tensor]:
        if device not in cache:
            torch.manual_seed(0)
            model = resnet18(WIDTH).to(device).eval()
            gen = torch.Generator().manual_seed(1)
            x = torch.rand(BATCH, 3, 32, 32, generator=gen).to(device)
            y = torch.randint(0, CLASSES, (BATCH,), generator=gen).to(device)
            cache[device] = (model, x, y)
        return cache[device]

    yield {"get": get}
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
    problem: dict[str, Any],
    device: str,
    variant: str,
) -> None:
    """Check the attack from x against advfast.pgd, then time PGD-10 with a random start."""
    model, x, y = problem["get"](device)

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

    max_err, call_s = 0.0, 0.0
    if variant != "model_only":
        expected, _ = _timed(lambda: advfast_pgd(False), device)
        actual, call_s = _timed(lambda: attack(False), device)
        max_err = float((actual - expected).abs().max())
        assert model.training is False, f"{variant} left the model in training mode"
        if variant == "torchattacks":
            torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0)
        else:
            assert torch.equal(actual, expected), (
                f"{variant}: differs from advfast.pgd by up to {max_err:.3g}"
            )
        assert float((actual - x).abs().max()) <= EPS + 1e-6, f"{variant} left the eps-ball"
    else:
        _, call_s = _timed(lambda: attack(True), device)

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
            "max_abs_error_vs_advfast": max_err,
        }
    )
    benchmark.pedantic(target, rounds=rounds_for(call_s), warmup_rounds=1, iterations=1)
