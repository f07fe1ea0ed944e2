"""Shared test helpers: layouts, ulp comparisons, what was built, tolerances."""

from __future__ import annotations

import math

import torch
from torch import Tensor

import advfast
from advfast import ops, reference
from advfast._extension import _C

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

# Explicit mantissa bits (excluding the implicit one) per storage dtype, for ulp distances.
MANTISSA_BITS = {torch.float32: 23, torch.float64: 52, torch.float16: 10, torch.bfloat16: 7}

# Layouts a [B, C, H, W] tensor can arrive in. "batch_inner" is dense but with the batch dimension not
# outermost in memory; "strided" is not dense at all. Both take the ops' copy path.
LAYOUTS = ("contiguous", "channels_last", "batch_inner", "strided")

CPU_ISAS = tuple(advfast.build_info()["cpu_isas"])


def cuda_available() -> bool:
    """Tests of CUDA kernels run only when this build has them and a GPU is present."""
    return advfast.has_cuda_kernels() and torch.cuda.is_available()


def devices() -> list[str]:
    return ["cpu", "cuda"] if cuda_available() else ["cpu"]


class cpu_isa:
    """Context manager running the CPU loops with one compiled instruction set."""

    def __init__(self, isa: str) -> None:
        self.isa = isa

    def __enter__(self) -> None:
        self.previous = _C.cpu_isa()
        _C.set_cpu_isa(self.isa)

    def __exit__(self, *exc: object) -> None:
        _C.set_cpu_isa(self.previous)


def in_layout(t: Tensor, layout: str) -> Tensor:
    """The same values as t ([B, ...]) stored in the given layout."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t.contiguous()
    if layout == "batch_inner":
        # Dense storage with the batch dimension innermost: permute the dims, copy, permute back.
        order = (*range(1, t.dim()), 0)
        inverse = [order.index(i) for i in range(t.dim())]
        return t.permute(order).contiguous().permute(inverse)
    if layout == "strided":
        # Every other element of a twice-as-wide buffer along the last dim: not dense.
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        view = wide[..., ::2]
        view.copy_(t)
        return view
    raise ValueError(layout)


def ulp_distance(actual: Tensor, expected: Tensor) -> float:
    """Largest distance between actual and expected in units in the last place of expected's dtype."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if actual.numel() == 0:
        return 0.0
    a, e = actual.double(), expected.double()
    bits = MANTISSA_BITS[expected.dtype]
    magnitude = e.abs().clamp_min(torch.finfo(expected.dtype).tiny)
    ulp = torch.exp2(torch.floor(torch.log2(magnitude)) - bits)
    return ((a - e).abs() / ulp).max().item()


def describe_mismatch(actual: Tensor, expected: Tensor) -> str:
    """The first differing element, for assertion messages."""
    diff = (actual.double() - expected.double()).abs()
    if diff.numel() == 0 or diff.max() == 0:
        return "no mismatch"
    index = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0])
    return f"at {index}: actual {actual[index].item()!r}, expected {expected[index].item()!r}"


def assert_close_ulps(actual: Tensor, expected: Tensor, ulps: float) -> None:
    distance = ulp_distance(actual, expected)
    assert distance <= ulps, f"{distance} ulps > {ulps}; {describe_mismatch(actual, expected)}"


def exact_or_one_ulp(actual: Tensor, expected: Tensor) -> None:
    """The L-inf contract: float32 and float64 bit for bit, half types within one unit in the last place."""
    if actual.dtype in (torch.float32, torch.float64):
        assert torch.equal(actual, expected), describe_mismatch(actual, expected)
    else:
        assert_close_ulps(actual, expected, 1)


def within_norm_rounding(actual: Tensor, expected: Tensor) -> None:
    """The L2 contract: equal up to the rounding of the per-sample norm reductions (which sum in another
    order than torch's), i.e. a few float32 ulps of the step, or one ulp of a 16-bit result. The same
    tolerances on every device."""
    if actual.dtype == torch.float64:
        torch.testing.assert_close(actual, expected, atol=1e-12, rtol=1e-12)
    elif actual.dtype == torch.float32:
        torch.testing.assert_close(actual, expected, atol=2e-6, rtol=2e-6)
    else:
        assert_close_ulps(actual, expected, 1)


# Fields of torch.ops.advfast._cuda_l2_plan's answer (CUDA builds only), and its path codes.
L2_PLAN_FIELDS = (
    "path",
    "group_threads",
    "block_threads",
    "shared_bytes",
    "chunks",
    "chunk_packs",
    "blocks",
    "cluster_blocks",
)
L2_PATHS = ("chunked", "on chip", "cluster")


def cuda_l2_plan(op: str, dtype: torch.dtype, batch: int, per_sample: int) -> dict[str, int | str]:
    """How the CUDA L2-family op ("l2_step", "random_start_l2", "apgd_l2") runs a [batch, per_sample] call of
    16-byte aligned tensors on the current device: its path ("on chip": a block or group per sample; "cluster":
    a thread-block cluster per sample, sm_90+; "chunked": several passes), the group, block and cluster
    sizes, the shared memory per block, the chunks per sample and packs per chunk, and the grid's blocks."""
    values = torch.ops.advfast._cuda_l2_plan(op, dtype, batch, per_sample)
    plan: dict[str, int | str] = dict(zip(L2_PLAN_FIELDS, values, strict=True))
    plan["path"] = L2_PATHS[values[0]]
    return plan


def distance(x_adv: Tensor, x: Tensor, norm: str) -> Tensor:
    """Per-sample L-inf or L2 distance, in float64."""
    d = (x_adv.double() - x.double()).flatten(1)
    return d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)


def assert_in_ball(x_adv: Tensor, x: Tensor, eps: float | Tensor, norm: str, lo: float, hi: float) -> None:
    """x_adv is finite, inside [lo, hi] and inside the eps-ball around x, up to the rounding of storing x + d
    in x_adv's dtype (half an ulp of values up to 2 in magnitude, per element)."""
    assert torch.isfinite(x_adv).all(), "non-finite values"
    assert (x_adv >= lo).all() and (x_adv <= hi).all(), f"outside the bounds [{lo}, {hi}]"
    if x_adv.shape[0] == 0:
        return
    if not isinstance(eps, Tensor):
        eps = torch.full((x_adv.shape[0],), eps, dtype=torch.float64)
    eps = eps.double().cpu()
    slack = 4 * math.ldexp(2.0, -MANTISSA_BITS[x_adv.dtype])
    elements = max(x_adv[0].numel(), 1)
    dist = distance(x_adv, x, norm).cpu()
    inside = dist <= eps * (1 + slack) + slack * (math.sqrt(elements) if norm == "l2" else 1.0)
    assert inside.all(), f"outside the {norm} ball: {dist[~inside].tolist()} > {eps[~inside].tolist()}"


# Every op under one name each, for tests that check one contract on all of them.
OPS = ("linf_step_", "l2_step_", "random_start_linf", "random_start_l2", "apgd_linf", "apgd_l2")


def run_op(name: str, x_adv, grad, x, eps, alpha, lo=0.0, hi=1.0, mask=None, reference_too: bool = False):
    """Runs op `name` of OPS in place on x_adv through one signature (alpha is APGD's eta; APGD's x_prev is
    halfway between x_adv and x); with reference_too, first computes and returns what advfast.reference says
    (the random starts draw from the same seed)."""
    x_prev = (x_adv.detach().clone() * 0.5 + x * 0.5).to(x_adv.dtype)
    expected = None
    if name in ("linf_step_", "l2_step_"):
        if reference_too:
            expected = getattr(reference, name[:-1])(x_adv, grad, x, eps, alpha, lo, hi, mask)
        getattr(ops, name)(x_adv, grad, x, eps, alpha, lo, hi, mask)
    elif name.startswith("random_start"):
        norm = name.rsplit("_", 1)[1]

        def seeded() -> torch.Generator:
            return torch.Generator(x_adv.device).manual_seed(0)

        if reference_too:
            expected = reference.random_start(x_adv, x, eps, norm, lo, hi, seeded())
        ops.random_start_(x_adv, x, eps, norm, lo, hi, seeded())
    else:
        norm = name.split("_", 1)[1]
        if reference_too:
            expected, _ = reference.apgd_step(x_adv, x_prev, grad, x, eps, alpha, 0.75, lo, hi, norm, mask)
        ops.apgd_step_(x_adv, x_prev, grad, x, eps, alpha, 0.75, lo, hi, norm, mask)
    return expected
