"""The fused step ops against the eager chains, torch.compile and a plain copy of the same bytes.

Per device, step (the PGD steps ``linf``, ``l2`` and the APGD momentum steps ``apgd-linf``, ``apgd-l2``) and
size (float32, CIFAR-shaped ``[N // 3072, 3, 32, 32]`` unless ``ADVFAST_BENCH_SAMPLE`` says otherwise, N from 1M
to 64M elements), five variants of one step
from the same inputs:

- ``advfast``: ``ops.linf_step_`` / ``ops.l2_step_`` / ``ops.apgd_step_``, in place, one pass over memory
  (three for the L2 step's norms, four for APGD-L2's);
- ``eager_out_of_place``: the chain each step runs in the reference code, a new tensor per op: torchattacks'
  ``PGD`` / ``PGDL2``, and for APGD the update of fra31/auto-attack (``autopgd_base.py``, including its
  ``x_adv_old = x_adv.clone()``);
- ``eager_in_place``: the same math with in-place ops into preallocated buffers;
- ``compiled``: ``torch.compile(fullgraph=True, dynamic=False)`` of the op's formula
  (:mod:`advfast.reference`), out of place, compiled and warmed up per shape outside the timed region;
- ``copy_floor``: ``dst.copy_(src)`` over as many bytes as the step must move, the memory floor: a PGD step
  reads x_adv, grad and x and writes x_adv (16 bytes per element; a copy of 2N floats moves the same); an APGD
  step reads x_adv, x_prev, grad and x and writes x_adv and x_prev (24 bytes; a copy of 3N floats).

Every variant's result is checked against :mod:`advfast.reference` before it is timed, and the test fails if
it is wrong: bit for bit for the L-inf advfast and eager steps (PGD and APGD), within 1e-5 where the rounding of
the L2 norms' reductions (or of a compiler's fusion) may differ. Each benchmark's ``extra_info`` records the bytes
the step moves, the device and its name, torch's version and thread count; benchmarks are grouped per
(device, norm, size), so pytest-benchmark's table puts the variants of one size side by side.

Run from the repository root (a few minutes on 2 CPU cores, most of it the 64M eager out-of-place chains,
the first torch.compile and building the inputs; peak memory about 3 GB, at 64M)::

    .venv/bin/pytest benchmarks/bench_step.py --benchmark-json=benchmarks/results/step-cpu.json
    .venv/bin/python benchmarks/report.py benchmarks/results/step-cpu.json

``ADVFAST_BENCH_STEPS=apgd-linf,apgd-l2`` restricts the steps (default all four) and
``ADVFAST_BENCH_SIZES=1M,4M`` the sizes (default ``1M,4M,16M,64M``; ``K``/``M`` suffixes or plain
element counts). Rounds follow pytest-benchmark's options: at least ``--benchmark-min-rounds`` (default 5),
more while ``--benchmark-max-time`` (default 1 s) is not used up, after one warm-up round. A smoke run::

    ADVFAST_BENCH_SIZES=1M .venv/bin/pytest benchmarks/bench_step.py --benchmark-min-rounds=1 \\
        --benchmark-max-time=0.05 --benchmark-json=benchmarks/results/smoke.json

``ADVFAST_BENCH_SAMPLE=3x224x224`` sets the sample shape (default ``3x32x32``, CIFAR; ImageNet's is larger than
a GPU block's shared memory, so the CUDA L2 steps take a thread-block cluster per sample on sm_90+, else their
chunked path): the batch is N // sample elements.

On CUDA (when torch sees a GPU and advfast was built with its CUDA kernels) each variant is timed on the
device: ``calls_per_round`` calls captured into one CUDA graph, each round one replay between CUDA events
(benchmarks/conftest.py), so that launch latency and the host do not swamp kernels of a few microseconds.
``extra_info["device_median_s"]`` is the median seconds per call, which ``report.py`` uses; pytest-benchmark's
own (wall-clock) table then shows one round of ``calls_per_round`` eager calls, for reference only. The L2
steps also record which CUDA path advfast took (``cuda_l2_path``: on chip, cluster or chunked).
"""

from __future__ import annotations

import gc
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import Tensor

import advfast
from advfast import ops, reference

SIZES = {"1M": 2**20, "4M": 2**22, "16M": 2**24, "64M": 2**26}


def parse_sample(text: str | None) -> tuple[int, ...]:
    """The sample shape C x H x W from ``ADVFAST_BENCH_SAMPLE`` ("3x224x224"); CIFAR's 3x32x32 by default."""
    if not text:
        return (3, 32, 32)
    if re.fullmatch(r"\d+x\d+x\d+", text.strip()) is None:
        raise ValueError(f"ADVFAST_BENCH_SAMPLE: {text!r} is not a shape C x H x W such as 3x224x224")
    return tuple(int(d) for d in text.strip().split("x"))


SAMPLE_SHAPE = parse_sample(os.environ.get("ADVFAST_BENCH_SAMPLE"))
SAMPLE_NUMEL = math.prod(SAMPLE_SHAPE)
SAMPLE_NAME = "x".join(str(d) for d in SAMPLE_SHAPE)
# The steps; "norm" is the name results are grouped by (report.py prints one table per device and norm).
NORMS = ("linf", "l2", "apgd-linf", "apgd-l2")
VARIANTS = ("advfast", "eager_out_of_place", "eager_in_place", "compiled", "copy_floor")
# torchattacks' defaults: PGD eps=8/255, alpha=2/255; PGDL2 eps=1.0, alpha=0.2, eps_for_division=1e-10.
# APGD (auto-attack's CIFAR settings): eps 8/255 (L-inf) or 0.5 (L2), first step size eta = 2 * eps, momentum
# 0.75 after the first iteration; alpha below is eta, halved for every other sample (as APGD halves it per sample
# where progress stalls).
EPS = {"linf": 8 / 255, "l2": 1.0, "apgd-linf": 8 / 255, "apgd-l2": 0.5}
ALPHA = {"linf": 2 / 255, "l2": 0.2, "apgd-linf": 16 / 255, "apgd-l2": 1.0}
MOMENTUM = 0.75
DIVISION_EPS = 1e-10
APGD_DIVISION_EPS = 1e-12
LO, HI = 0.0, 1.0
# float32 x_adv, grad and x read, x_adv written; APGD also reads x_prev and writes it.
BYTES_PER_ELEMENT = {"linf": 16, "l2": 16, "apgd-linf": 24, "apgd-l2": 24}
# Variants whose float32 L-inf result must equal advfast.reference bit for bit (same operations, same order).
EXACT = {
    (norm, variant) for norm in ("linf", "apgd-linf") for variant in ("advfast", "eager_out_of_place", "eager_in_place")
}
# Otherwise: the L2 norms sum in another order (advfast: float64 on the CPU), and a compiler may contract a
# multiply-add; values lie in [0, 1], so 1e-5 is ~100 float32 ulps at 1 and far below any wrong result.
# (Whether such a variant came out bit-equal anyway is recorded in extra_info["bit_exact"].)
TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
CUDA_ELEMENTS_PER_ROUND = 2**27  # on CUDA, a round steps this many elements in all (>= 2 calls)


def parse_sizes(text: str | None) -> dict[str, int]:
    """Sizes from ``ADVFAST_BENCH_SIZES`` ("1M,4M", "256K", "3000000"): label -> element count."""
    if not text:
        return dict(SIZES)
    sizes: dict[str, int] = {}
    for item in text.split(","):
        label = item.strip().upper()
        match = re.fullmatch(r"(\d+)([KM]?)", label)
        if match is None:
            raise ValueError(f"ADVFAST_BENCH_SIZES: {item!r} is not a size such as 1M, 256K or 3000000")
        n = int(match.group(1)) * {"": 1, "K": 2**10, "M": 2**20}[match.group(2)]
        if n < SAMPLE_NUMEL:
            raise ValueError(f"ADVFAST_BENCH_SIZES: {item!r} is less than one {SAMPLE_NAME} sample")
        sizes[label] = n
    return sizes


def parse_steps(text: str | None) -> tuple[str, ...]:
    """Steps from ``ADVFAST_BENCH_STEPS`` ("linf,apgd-l2"), in NORMS order."""
    if not text:
        return NORMS
    wanted = {item.strip() for item in text.split(",")}
    unknown = wanted - set(NORMS)
    if unknown:
        raise ValueError(f"ADVFAST_BENCH_STEPS: unknown steps {sorted(unknown)}; choose from {NORMS}")
    return tuple(norm for norm in NORMS if norm in wanted)


BENCH_SIZES = parse_sizes(os.environ.get("ADVFAST_BENCH_SIZES"))
BENCH_STEPS = parse_steps(os.environ.get("ADVFAST_BENCH_STEPS"))
# torch.cuda.is_available() is safe without a GPU; CUDA runs only where advfast has its CUDA kernels.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and advfast.has_cuda_kernels() else [])
# Device, then size, then norm, then variant: one size's tensors are built once and freed before the next.
PARAMS = [
    pytest.param(device, norm, size, variant, id=f"{device}-{norm}-{size}-{variant}", marks=marks)
    for device in DEVICES
    for marks in [[pytest.mark.cuda] if device == "cuda" else []]
    for size in BENCH_SIZES
    for norm in BENCH_STEPS
    for variant in VARIANTS
]


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ---- inputs ----------------------------------------------------------------------------------------------


@dataclass
class Inputs:
    """One step's inputs and its reference result; tensors [B, *SAMPLE_SHAPE] float32."""

    x: Tensor  # clean batch, uniform in [0, 1]
    grad: Tensor  # standard normal
    start: Tensor  # x_adv before the step: a random point of the eps-ball around x, clipped to [0, 1]
    expected: Tensor  # advfast.reference's step from start (APGD: the new x_adv)
    prev: Tensor | None = None  # APGD: x_prev, another random point of the ball
    eta: Tensor | None = None  # APGD: the per-sample step size [B]


def base_norm(norm: str) -> str:
    """The ball of a step: "linf" or "l2"."""
    return norm.removeprefix("apgd-")


@dataclass
class _Cache:
    """The tensors of one (device, size) at a time (64M elements are 256 MB per tensor), and the compiled
    formulas of that shape."""

    key: tuple[str, int] | None = None
    clean: tuple[Tensor, Tensor] | None = None
    norm_inputs: dict[str, Inputs] = field(default_factory=dict)
    compiled: dict[str, Callable[..., Tensor]] = field(default_factory=dict)
    compile_s: dict[str, float] = field(default_factory=dict)

    def clear(self) -> None:
        had_compiled = bool(self.compiled)
        self.key, self.clean = None, None
        self.norm_inputs.clear()
        self.compiled.clear()
        self.compile_s.clear()
        gc.collect()
        if had_compiled:
            torch._dynamo.reset()  # drop the compiled graphs of the old shape
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def inputs(self, device: str, n: int, norm: str) -> Inputs:
        if self.key != (device, n):
            self.clear()
            self.key = (device, n)
            gen = torch.Generator(device=device).manual_seed(n)
            shape = (n // SAMPLE_NUMEL, *SAMPLE_SHAPE)
            x = torch.rand(shape, generator=gen, device=device)
            grad = torch.randn(shape, generator=gen, device=device)
            self.clean = (x, grad)
        if norm not in self.norm_inputs:
            self.norm_inputs.clear()  # one norm's start and expected result at a time
            assert self.clean is not None
            x, grad = self.clean
            start = _random_start(x, base_norm(norm), EPS[norm], seed=n + 1)
            if norm.startswith("apgd-"):
                prev = _random_start(x, base_norm(norm), EPS[norm], seed=n + 2)
                eta = apgd_step_sizes(norm, x)
                expected, _ = reference.apgd_step(
                    start, prev, grad, x, EPS[norm], eta, MOMENTUM, LO, HI, norm=base_norm(norm)
                )
                self.norm_inputs[norm] = Inputs(x, grad, start, expected, prev, eta)
            else:
                step = reference.linf_step if norm == "linf" else reference.l2_step
                expected = step(start, grad, x, EPS[norm], ALPHA[norm], LO, HI)
                self.norm_inputs[norm] = Inputs(x, grad, start, expected)
        return self.norm_inputs[norm]


_CACHE = _Cache()


@pytest.fixture(scope="module", autouse=True)
def _free_cache() -> Iterator[None]:
    yield
    _CACHE.clear()


def apgd_step_sizes(norm: str, x: Tensor) -> Tensor:
    """APGD's per-sample step size [B]: eta for even samples, eta / 2 for odd ones."""
    halvings = torch.arange(x.shape[0], device=x.device) % 2
    return ALPHA[norm] * torch.pow(0.5, halvings.to(x.dtype))


def _random_start(x: Tensor, norm: str, eps: float, seed: int) -> Tensor:
    """L-inf: uniform in the eps-cube; L2: a uniform direction at radius eps * U[0, 1] (so that the step's
    projection is active for some samples and not for others). Clipped to [0, 1]."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    if norm == "linf":
        noise = torch.rand(x.shape, generator=gen, device=x.device).mul_(2).sub_(1).mul_(eps)
    else:
        noise = torch.randn(x.shape, generator=gen, device=x.device)
        radius = eps * torch.rand(x.shape[0], generator=gen, device=x.device)
        scale = radius / torch.linalg.vector_norm(noise.flatten(1), dim=1)
        noise.mul_(scale.view(-1, *([1] * len(SAMPLE_SHAPE))))
    return noise.add_(x).clamp_(LO, HI)


# ---- the variants ----------------------------------------------------------------------------------------


def eager_linf_out_of_place(x_adv: Tensor, grad: Tensor, x: Tensor, eps: float, alpha: float) -> Tensor:
    """torchattacks ``PGD``'s step, op for op: six temporaries and the result, each a full-size tensor."""
    adv = x_adv.detach() + alpha * grad.sign()
    delta = torch.clamp(adv - x, min=-eps, max=eps)
    return torch.clamp(x + delta, min=LO, max=HI).detach()


def eager_l2_out_of_place(x_adv: Tensor, grad: Tensor, x: Tensor, eps: float, alpha: float) -> Tensor:
    """torchattacks ``PGDL2``'s step, op for op."""
    b = x_adv.shape[0]
    grad_norms = torch.norm(grad.view(b, -1), p=2, dim=1) + DIVISION_EPS
    grad = grad / grad_norms.view(b, 1, 1, 1)
    adv = x_adv.detach() + alpha * grad
    delta = adv - x
    delta_norms = torch.norm(delta.view(b, -1), p=2, dim=1)
    factor = eps / delta_norms
    factor = torch.min(factor, torch.ones_like(delta_norms))
    delta = delta * factor.view(-1, 1, 1, 1)
    return torch.clamp(x + delta, min=LO, max=HI).detach()


def eager_in_place(norm: str, x_adv: Tensor, grad: Tensor, x: Tensor, eps: float, alpha: float) -> Callable[[], Tensor]:
    """The out-of-place chain's math with in-place ops into one preallocated buffer (plus [B] norms);
    each call steps ``x_adv`` in place and returns it."""
    buf = torch.empty_like(x)
    if norm == "linf":

        def linf() -> Tensor:
            torch.sign(grad, out=buf)
            buf.mul_(alpha).add_(x_adv).sub_(x).clamp_(-eps, eps)
            torch.add(x, buf, out=x_adv)
            return x_adv.clamp_(LO, HI)

        return linf

    b = x.shape[0]
    column = (b, 1, 1, 1)
    grad_norms, delta_norms, factor = (x.new_empty(b) for _ in range(3))

    def l2() -> Tensor:
        torch.linalg.vector_norm(grad.view(b, -1), dim=1, out=grad_norms)
        grad_norms.add_(DIVISION_EPS)
        torch.div(grad, grad_norms.view(column), out=buf)
        buf.mul_(alpha).add_(x_adv).sub_(x)
        torch.linalg.vector_norm(buf.view(b, -1), dim=1, out=delta_norms)
        factor.fill_(eps).div_(delta_norms).clamp_(max=1.0)
        buf.mul_(factor.view(column))
        torch.add(x, buf, out=x_adv)
        return x_adv.clamp_(LO, HI)

    return l2


def eager_apgd_out_of_place(
    norm: str, x_adv: Tensor, x_prev: Tensor, grad: Tensor, x: Tensor, eps: float, eta: Tensor
) -> tuple[Tensor, Tensor]:
    """fra31/auto-attack's APGD update (``attack_single_run``), op for op: returns the new x_adv and the clone
    it keeps as the next x_prev. eta is the [B] step size."""
    step_size = eta.view(-1, 1, 1, 1)
    a = MOMENTUM
    grad2 = x_adv - x_prev
    x_adv_old = x_adv.clone()
    if norm == "apgd-linf":
        x_adv_1 = x_adv + step_size * torch.sign(grad)
        x_adv_1 = torch.clamp(torch.min(torch.max(x_adv_1, x - eps), x + eps), LO, HI)
        x_adv_1 = torch.clamp(
            torch.min(torch.max(x_adv + (x_adv_1 - x_adv) * a + grad2 * (1 - a), x - eps), x + eps), LO, HI
        )
        return x_adv_1, x_adv_old

    def l2_norm(t: Tensor) -> Tensor:
        return (t**2).view(t.shape[0], -1).sum(-1).sqrt().view(-1, 1, 1, 1)

    def normalize(t: Tensor) -> Tensor:
        return t / (l2_norm(t) + APGD_DIVISION_EPS)

    x_adv_1 = x_adv + step_size * normalize(grad)
    x_adv_1 = torch.clamp(
        x + normalize(x_adv_1 - x) * torch.min(eps * torch.ones_like(x), l2_norm(x_adv_1 - x)), LO, HI
    )
    x_adv_1 = x_adv + (x_adv_1 - x_adv) * a + grad2 * (1 - a)
    x_adv_1 = torch.clamp(
        x + normalize(x_adv_1 - x) * torch.min(eps * torch.ones_like(x), l2_norm(x_adv_1 - x)), LO, HI
    )
    return x_adv_1, x_adv_old


def eager_apgd_in_place(
    norm: str, x_adv: Tensor, x_prev: Tensor, grad: Tensor, x: Tensor, eps: float, eta: Tensor
) -> Callable[[], Tensor]:
    """The APGD update's math with in-place ops into two preallocated buffers (plus [B] norms); each call steps
    ``x_adv`` and ``x_prev`` in place and returns ``x_adv``. The L-inf ball's faces intersected with the bounds
    depend on x only, so they are computed once here, as a user's loop would (same values as projecting onto
    the ball and then clipping)."""
    b = x.shape[0]
    column = (b, 1, 1, 1)
    step_size = eta.view(column)
    z, momentum_term = torch.empty_like(x), torch.empty_like(x)
    lower, upper = (x - eps).clamp_(LO, HI), (x + eps).clamp_(LO, HI)  # the ball within the bounds
    norms, factor = x.new_empty(b), x.new_empty(b)

    def l2_project_(v: Tensor) -> Tensor:
        """v <- clip(x + (v - x) * min(1, eps / ||v - x||), lo, hi), in place."""
        v.sub_(x)
        torch.linalg.vector_norm(v.view(b, -1), dim=1, out=norms)
        factor.fill_(eps).div_(norms).clamp_(max=1.0)
        return v.mul_(factor.view(column)).add_(x).clamp_(LO, HI)

    def linf() -> Tensor:
        torch.sign(grad, out=z)
        z.mul_(step_size).add_(x_adv)
        torch.minimum(torch.maximum(z, lower, out=z), upper, out=z)
        torch.sub(x_adv, x_prev, out=momentum_term).mul_(1 - MOMENTUM)
        x_prev.copy_(x_adv)
        z.sub_(x_adv).mul_(MOMENTUM)
        x_adv.add_(z).add_(momentum_term)
        return torch.minimum(torch.maximum(x_adv, lower, out=x_adv), upper, out=x_adv)

    def l2() -> Tensor:
        torch.linalg.vector_norm(grad.view(b, -1), dim=1, out=norms)
        norms.add_(APGD_DIVISION_EPS)
        torch.div(grad, norms.view(column), out=z)
        l2_project_(z.mul_(step_size).add_(x_adv))
        torch.sub(x_adv, x_prev, out=momentum_term).mul_(1 - MOMENTUM)
        x_prev.copy_(x_adv)
        z.sub_(x_adv).mul_(MOMENTUM)
        return l2_project_(x_adv.add_(z).add_(momentum_term))

    return linf if norm == "apgd-linf" else l2


def apgd_formula(norm: str) -> Callable[..., Tensor]:
    """The fused APGD op's formula (advfast.reference), out of place, returning the new x_adv, for torch.compile."""

    def formula(x_adv: Tensor, x_prev: Tensor, grad: Tensor, x: Tensor, eps: float, eta: Tensor) -> Tensor:
        return reference.apgd_step(x_adv, x_prev, grad, x, eps, eta, MOMENTUM, LO, HI, norm=base_norm(norm))[0]

    return formula


def linf_formula(x_adv: Tensor, grad: Tensor, x: Tensor, eps: float, alpha: float) -> Tensor:
    """The fused L-inf op's formula, out of place (non-finite gradient entries count 0), for torch.compile."""
    return reference.linf_step(x_adv, grad, x, eps, alpha, LO, HI)


def l2_formula(x_adv: Tensor, grad: Tensor, x: Tensor, eps: float, alpha: float) -> Tensor:
    """The fused L2 op's formula, out of place, for torch.compile."""
    return reference.l2_step(x_adv, grad, x, eps, alpha, LO, HI)


def _import_inductor() -> None:
    """Import torch.compile's backend with one known warning silenced: importing it imports
    torch.utils.mkldnn, whose torch.jit.script_method raises a DeprecationWarning inside torch itself, and
    filterwarnings=error would turn that into a compile failure."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.script_method` is deprecated", category=DeprecationWarning
        )
        import torch._inductor.compile_fx  # noqa: F401


def compiled_step(norm: str, inputs: Inputs, device: str) -> tuple[Callable[..., Tensor], float]:
    """torch.compile of the norm's formula for this shape, compiled and warmed up here (not timed), and the
    seconds compiling took."""
    if norm not in _CACHE.compiled:
        _import_inductor()
        if norm.startswith("apgd-"):
            fn = torch.compile(apgd_formula(norm), fullgraph=True, dynamic=False)
            arguments = (inputs.start, inputs.prev, inputs.grad, inputs.x, EPS[norm], inputs.eta)
        else:
            formula = linf_formula if norm == "linf" else l2_formula
            fn = torch.compile(formula, fullgraph=True, dynamic=False)
            arguments = (inputs.start, inputs.grad, inputs.x, EPS[norm], ALPHA[norm])
        began = time.perf_counter()
        for _ in range(2):
            fn(*arguments)
        synchronize(device)
        _CACHE.compiled[norm] = fn
        _CACHE.compile_s[norm] = time.perf_counter() - began
    return _CACHE.compiled[norm], _CACHE.compile_s[norm]


def build_apgd(norm: str, variant: str, inputs: Inputs, device: str) -> tuple[Callable[[], Tensor], Tensor]:
    """build() for the APGD steps: the variant's call returns the new x_adv."""
    eps, x, grad, start = EPS[norm], inputs.x, inputs.grad, inputs.start
    assert inputs.prev is not None and inputs.eta is not None
    prev, eta = inputs.prev, inputs.eta
    if variant == "advfast":
        work, work_prev = start.clone(), prev.clone()
        return (
            lambda: ops.apgd_step_(work, work_prev, grad, x, eps, eta, MOMENTUM, LO, HI, norm=base_norm(norm))
        ), inputs.expected
    if variant == "eager_out_of_place":
        return (lambda: eager_apgd_out_of_place(norm, start, prev, grad, x, eps, eta)[0]), inputs.expected
    if variant == "eager_in_place":
        return eager_apgd_in_place(norm, start.clone(), prev.clone(), grad, x, eps, eta), inputs.expected
    if variant == "compiled":
        fn, _ = compiled_step(norm, inputs, device)
        return (lambda: fn(start, prev, grad, x, eps, eta)), inputs.expected
    raise ValueError(f"unknown variant {variant!r}")


def build(norm: str, variant: str, inputs: Inputs, device: str) -> tuple[Callable[[], Tensor], Tensor]:
    """One call of the variant (a step, or the floor's copy) and the tensor its first call must produce."""
    if variant == "copy_floor":
        return copy_floor(inputs, floats_per_element=BYTES_PER_ELEMENT[norm] // 8)
    if norm.startswith("apgd-"):
        return build_apgd(norm, variant, inputs, device)
    eps, alpha, x, grad = EPS[norm], ALPHA[norm], inputs.x, inputs.grad
    if variant == "advfast":
        work = inputs.start.clone()
        op = ops.linf_step_ if norm == "linf" else ops.l2_step_
        return (lambda: op(work, grad, x, eps, alpha, LO, HI)), inputs.expected
    if variant == "eager_out_of_place":
        chain = eager_linf_out_of_place if norm == "linf" else eager_l2_out_of_place
        start = inputs.start
        return (lambda: chain(start, grad, x, eps, alpha)), inputs.expected
    if variant == "eager_in_place":
        return eager_in_place(norm, inputs.start.clone(), grad, x, eps, alpha), inputs.expected
    if variant == "compiled":
        fn, _ = compiled_step(norm, inputs, device)
        start = inputs.start
        return (lambda: fn(start, grad, x, eps, alpha)), inputs.expected
    raise ValueError(f"unknown variant {variant!r}")


def copy_floor(inputs: Inputs, floats_per_element: int) -> tuple[Callable[[], Tensor], Tensor]:
    """dst.copy_(src) of floats_per_element * N floats (x, grad, then x_adv's start): it reads and writes
    8 * floats_per_element bytes per element of the step."""
    parts = (inputs.x, inputs.grad, inputs.start)[:floats_per_element]
    src = torch.cat([p.reshape(-1) for p in parts])
    dst = torch.empty_like(src)
    return (lambda: dst.copy_(src)), src


def check(norm: str, variant: str, actual: Tensor, expected: Tensor) -> tuple[bool, float]:
    """Fail unless the variant's first result is right; return whether it is bit-equal to the expected
    tensor and its largest absolute error."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    exact = torch.equal(actual, expected)
    max_err = 0.0 if exact else float((actual - expected).abs().max())
    if variant == "copy_floor" or (norm, variant) in EXACT:
        if not exact:
            where = torch.nonzero(actual != expected)[:5].tolist()
            pytest.fail(
                f"{norm} {variant}: not bit-equal to advfast.reference (max |error| {max_err:.3g}); "
                f"first differing indices {where}"
            )
    else:
        torch.testing.assert_close(actual, expected, **TOLERANCE, msg=lambda m: f"{norm} {variant}: {m}")
    return exact, max_err


# ---- the benchmark ---------------------------------------------------------------------------------------


def cuda_l2_path(norm: str, batch: int) -> str | None:
    """Which CUDA path advfast's L2-family step takes for this batch ("on chip", "cluster" or "chunked"), else
    None."""
    names = {"l2": "l2_step", "apgd-l2": "apgd_l2"}
    if norm not in names:
        return None
    plan = torch.ops.advfast._cuda_l2_plan(names[norm], torch.float32, batch, SAMPLE_NUMEL)
    return ("chunked", "on chip", "cluster")[plan[0]]


@pytest.mark.parametrize(("device", "norm", "size", "variant"), PARAMS)
def test_step(
    benchmark: Any,
    rounds_for: Callable[[float], int],
    environment: Callable[[str], dict[str, Any]],
    cuda_device_time: Callable[..., Any],
    device: str,
    norm: str,
    size: str,
    variant: str,
) -> None:
    """Check one variant against the reference, then time it."""
    n_nominal = BENCH_SIZES[size]
    inputs = _CACHE.inputs(device, n_nominal, norm)
    step, expected = build(norm, variant, inputs, device)

    began = time.perf_counter()
    result = step()
    synchronize(device)
    first_call_s = time.perf_counter() - began
    exact, max_err = check(norm, variant, result, expected)
    del result

    calls = 1 if device == "cpu" else max(2, CUDA_ELEMENTS_PER_ROUND // n_nominal)
    target: Callable[[], Any] = step
    if device != "cpu":

        def target() -> None:
            for _ in range(calls):
                step()
            torch.cuda.synchronize()

        began = time.perf_counter()
        target()
        first_call_s = (time.perf_counter() - began) / calls

    numel = inputs.x.numel()
    benchmark.group = f"{device}-{norm}-{size}"
    benchmark.extra_info.update(environment(device))
    benchmark.extra_info.update(
        {
            "norm": norm,
            "variant": variant,
            "size": size,
            "elements": numel,
            "shape": list(inputs.x.shape),
            "sample": SAMPLE_NAME,
            "dtype": "float32",
            "bytes_moved": BYTES_PER_ELEMENT[norm] * numel,
            "calls_per_round": calls,
            "eps": EPS[norm],
            "alpha": ALPHA[norm],  # APGD: eta of the even samples (the odd ones take half)
            "bit_exact": exact,
            "max_abs_error": max_err,
        }
    )
    if variant == "compiled":
        benchmark.extra_info["compile_s"] = _CACHE.compile_s[norm]
    if device == "cpu":
        benchmark.pedantic(target, rounds=rounds_for(first_call_s * calls), warmup_rounds=1, iterations=1)
        return
    if variant == "advfast" and (path := cuda_l2_path(norm, inputs.x.shape[0])) is not None:
        benchmark.extra_info["cuda_l2_path"] = path
    timed = cuda_device_time(step, calls, rounds_for(first_call_s * calls))
    benchmark.extra_info.update(timed.extra_info())
    benchmark.pedantic(target, rounds=1, warmup_rounds=0, iterations=1)  # wall clock, for reference only
