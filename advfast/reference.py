"""Pure-PyTorch statements of advfast's ops: the oracle of the tests and the eager baseline of the benchmarks.

Each function is out of place and returns the new adversarial tensor (``apgd_step``: the new x_adv and x_prev);
it computes in float32 (float64 for float64 inputs) with the same order of floating-point operations as the
fused kernels in ``csrc/include/advfast/perturb.h``, and treats every input as the ops do:

- a float ``eps``/``alpha``/``eta`` must be finite and >= 0 in the math dtype, and the bounds ordered: the same
  ``RuntimeError`` (same message) as the op otherwise;
- a per-sample entry that is negative, NaN or infinite (in the math dtype) counts as 0;
- the bounds are intersected with the finite range of x_adv's dtype (so infinite bounds still give finite
  results);
- per-sample L2 norms are overflow-safe (float32: summed in float64; float64: scaled by a power of two).
"""

from __future__ import annotations

import torch
from torch import Tensor

NORM_TINY = 1e-12
NORMS = ("linf", "l2")

_DTYPE_NAMES = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
}


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the ops compute in for a storage dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _largest(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).max)


def _check_scalar(name: str, value: float | Tensor, storage: torch.dtype) -> None:
    """The op's check of a float eps / alpha / eta (per-sample tensors are not checked, as in the op)."""
    if isinstance(value, Tensor):
        return
    math = math_dtype(storage)
    if not (0.0 <= value <= _largest(math)):
        raise RuntimeError(
            f"{name} must be finite and >= 0 in {_DTYPE_NAMES[math]} (the dtype the op computes in), got {value}"
        )


def _finite_bounds(lo: float, hi: float, storage: torch.dtype) -> tuple[float, float]:
    """[lo, hi] intersected with the finite range of the storage dtype, checked as the op checks it."""
    lo, hi = float(lo), float(hi)
    if lo != lo or hi != hi:
        raise RuntimeError(f"bounds must not be NaN, got lo={lo}, hi={hi}")
    if not lo <= hi:
        raise RuntimeError(f"bounds need lo <= hi, got lo={lo}, hi={hi}")
    limit = _largest(storage)
    finite_lo, finite_hi = max(lo, -limit), min(hi, limit)
    if not finite_lo <= finite_hi:
        raise RuntimeError(f"bounds [{lo}, {hi}] contain no finite {_DTYPE_NAMES[storage]} value (x_adv's dtype)")
    return finite_lo, finite_hi


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise RuntimeError(f'norm must be "linf" or "l2", got "{norm}"')


def _column(value: float | Tensor, like: Tensor) -> float | Tensor:
    """A float as is; a per-sample [B] tensor as a [B, 1, ..., 1] column in like's dtype, with entries that are
    negative, NaN or infinite there read as 0 (as the kernels read unvalidated per-sample values)."""
    if not isinstance(value, Tensor):
        return float(value)
    if value.dim() == 0:
        value = value.expand(like.shape[0])
    value = value.to(like.dtype)
    usable = (value > 0) & (value <= _largest(like.dtype))
    value = torch.where(usable, value, torch.zeros_like(value))
    return value.view(-1, *([1] * (like.dim() - 1)))


def _keep_masked(new: Tensor, old: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return new
    return torch.where(mask.view(-1, *([1] * (old.dim() - 1))), new, old)


def _saturate(t: Tensor) -> Tensor:
    """t kept inside its dtype's finite range (an overflowed difference becomes the largest finite value)."""
    limit = _largest(t.dtype)
    return torch.clamp(t, -limit, limit)


def _sample_norm(t: Tensor) -> Tensor:
    """Per-sample L2 norm of a [B, ...] tensor (float32 or float64) as a [B, 1, ..., 1] column, without the
    overflow of a plain sum of squares: float32 sums in float64; float64 divides each sample by a power of two
    near its largest entry (exact) and multiplies the norm back."""
    flat = t.flatten(1)
    if flat.shape[1] == 0:
        norm = flat.new_zeros(flat.shape[0])
    elif t.dtype == torch.float64:
        largest = flat.abs().amax(dim=1, keepdim=True)
        _, exponent = torch.frexp(largest)
        scale = torch.ldexp(torch.ones_like(largest), exponent)
        norm = torch.linalg.vector_norm(flat / scale, dim=1) * scale.squeeze(1)
    else:
        norm = torch.linalg.vector_norm(flat.double(), dim=1).to(t.dtype)
    return norm.view(-1, *([1] * (t.dim() - 1)))


def _projection_factor(delta: Tensor, eps: float | Tensor) -> Tensor:
    """min(1, eps / ||delta_b||) per sample, 1 where ||delta_b|| <= eps (so 0/0 never occurs)."""
    norm = _sample_norm(delta)
    return torch.where(norm > eps, eps / norm, torch.ones_like(norm))


def linf_step(
    x_adv: Tensor,
    grad: Tensor,
    x: Tensor,
    eps: float | Tensor,
    alpha: float | Tensor,
    lo: float = 0.0,
    hi: float = 1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """``clip( x + clip( x_adv + alpha * sign(grad) - x, -eps, eps ), lo, hi )``; non-finite grad counts 0."""
    lo, hi = _finite_bounds(lo, hi, x_adv.dtype)
    _check_scalar("eps", eps, x_adv.dtype)
    _check_scalar("alpha", alpha, x_adv.dtype)
    t = math_dtype(x_adv.dtype)
    a, g, xm = x_adv.to(t), grad.to(t), x.to(t)
    eps_, alpha_ = _column(eps, a), _column(alpha, a)
    s = torch.where(torch.isfinite(g), torch.sign(g), torch.zeros_like(g))
    d = torch.clamp(a + alpha_ * s - xm, -eps_, eps_)
    out = torch.clamp(xm + d, lo, hi).to(x_adv.dtype)
    return _keep_masked(out, x_adv, mask)


def l2_step(
    x_adv: Tensor,
    grad: Tensor,
    x: Tensor,
    eps: float | Tensor,
    alpha: float | Tensor,
    lo: float = 0.0,
    hi: float = 1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """``u = g/(||g||+tiny); d = x_adv + alpha*u - x; d *= min(1, eps/||d||); clip(x + d, lo, hi)``, with d
    saturated to the finite range."""
    lo, hi = _finite_bounds(lo, hi, x_adv.dtype)
    _check_scalar("eps", eps, x_adv.dtype)
    _check_scalar("alpha", alpha, x_adv.dtype)
    t = math_dtype(x_adv.dtype)
    a, g, xm = x_adv.to(t), grad.to(t), x.to(t)
    eps_, alpha_ = _column(eps, a), _column(alpha, a)
    g = torch.where(torch.isfinite(g), g, torch.zeros_like(g))
    u = g / (_sample_norm(g) + NORM_TINY)
    d = _saturate(a + alpha_ * u - xm)
    out = torch.clamp(xm + d * _projection_factor(d, eps_), lo, hi).to(x_adv.dtype)
    return _keep_masked(out, x_adv, mask)


def _linf_project(v: Tensor, x: Tensor, eps: float | Tensor, lo: float, hi: float) -> Tensor:
    """``clip(min(max(v, x - eps), x + eps), lo, hi)``, as the APGD reference code writes it."""
    return torch.clamp(torch.minimum(torch.maximum(v, x - eps), x + eps), lo, hi)


def apgd_step(
    x_adv: Tensor,
    x_prev: Tensor,
    grad: Tensor,
    x: Tensor,
    eps: float | Tensor,
    eta: float | Tensor,
    momentum: float = 0.75,
    lo: float = 0.0,
    hi: float = 1.0,
    norm: str = "linf",
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """APGD's momentum step (Croce & Hein, 2020); returns ``(x_adv_new, x_prev_new)``, x_prev_new = x_adv::

        z         = P(x_adv + eta * s(grad))
        x_adv_new = P(x_adv + (z - x_adv) * momentum + (x_adv - x_prev) * (1 - momentum))

    linf: ``s = sign``, ``P(v) = clip(min(max(v, x - eps), x + eps), lo, hi)``; l2: ``s(g) = g / (||g||+tiny)``,
    ``P(v) = clip(x + (v - x) * min(1, eps / ||v - x||), lo, hi)``. The differences ``z - x_adv``,
    ``x_adv - x_prev`` and ``v - x`` are saturated to the finite range (no change unless they overflow).
    Masked-out samples keep both tensors as they were.
    """
    _check_norm(norm)
    if not 0.0 <= momentum <= 1.0:
        raise RuntimeError(f"momentum must be in [0, 1], got {momentum}")
    lo, hi = _finite_bounds(lo, hi, x_adv.dtype)
    _check_scalar("eps", eps, x_adv.dtype)
    _check_scalar("eta", eta, x_adv.dtype)
    momentum = float(momentum)
    t = math_dtype(x_adv.dtype)
    a, p, g, xm = x_adv.to(t), x_prev.to(t), grad.to(t), x.to(t)
    eps_, eta_ = _column(eps, a), _column(eta, a)
    if norm == "linf":
        s = torch.where(torch.isfinite(g), torch.sign(g), torch.zeros_like(g))
        z = _linf_project(a + eta_ * s, xm, eps_, lo, hi)
    else:
        g = torch.where(torch.isfinite(g), g, torch.zeros_like(g))
        u = g / (_sample_norm(g) + NORM_TINY)
        w = _saturate(a + eta_ * u - xm)
        z = torch.clamp(xm + w * _projection_factor(w, eps_), lo, hi)
    v = a + _saturate(z - a) * momentum + _saturate(a - p) * (1 - momentum)
    if norm == "linf":
        out = _linf_project(v, xm, eps_, lo, hi)
    else:
        w = _saturate(v - xm)
        out = torch.clamp(xm + w * _projection_factor(w, eps_), lo, hi)
    out = out.to(x_adv.dtype)
    return _keep_masked(out, x_adv, mask), _keep_masked(x_adv.clone(), x_prev, mask)


def _batch_outermost_dense(t: Tensor) -> bool:
    """Dense (a permutation of a contiguous layout) with the batch dimension outermost in memory: the layouts the
    ops work on in place (the op draws random noise into such an x_adv itself, else into a contiguous buffer)."""
    expected = 1
    for stride, size in sorted((t.stride(d), t.shape[d]) for d in range(t.dim()) if t.shape[d] != 1):
        if stride != expected:
            return False
        expected *= size
    return t.shape[0] <= 1 or t.stride(0) == t.numel() // t.shape[0]


def random_start(
    x_adv: Tensor,
    x: Tensor,
    eps: float | Tensor,
    norm: str = "linf",
    lo: float = 0.0,
    hi: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A uniform point of the eps-ball around x, clipped; draws noise exactly as the op does.

    ``linf``: ``clip(x + eps * U[-1, 1], lo, hi)``; ``l2``: ``clip(x + z * eps * U^(1/n) / ||z||, lo, hi)``.
    ``x_adv`` only gives the layout the noise is drawn in: like the op, into a buffer with x_adv's strides when
    x_adv is dense with the batch outermost, else into a contiguous one. An empty x_adv draws nothing.
    """
    _check_norm(norm)
    lo, hi = _finite_bounds(lo, hi, x_adv.dtype)
    _check_scalar("eps", eps, x_adv.dtype)
    if x_adv.numel() == 0:
        return torch.empty_like(x_adv)
    t = math_dtype(x_adv.dtype)
    if _batch_outermost_dense(x_adv):
        noise = torch.empty_like(x_adv)
    else:
        noise = torch.empty_like(x_adv, memory_format=torch.contiguous_format)
    xm = x.to(t)
    eps_ = _column(eps, xm)
    if norm == "linf":
        noise.uniform_(-1.0, 1.0, generator=generator)
        return torch.clamp(xm + eps_ * noise.to(t), lo, hi).to(x_adv.dtype)
    noise.normal_(0.0, 1.0, generator=generator)
    z = noise.to(t)
    u = torch.rand(z.shape[0], generator=generator, dtype=t, device=z.device)
    r = u.pow_(1.0 / z[0].numel()).view(-1, *([1] * (z.dim() - 1)))
    scale = eps_ * r / (_sample_norm(z) + NORM_TINY)
    return torch.clamp(xm + z * scale, lo, hi).to(x_adv.dtype)
