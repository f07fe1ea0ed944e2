"""Pure-PyTorch statements of advfast's ops: the oracle of the tests and the eager baseline of the benchmarks.

Each function is out of place and returns the new adversarial tensor; it computes in float32 (float64 for
float64 inputs) with the same order of floating-point operations as the fused kernels in
``csrc/include/advfast/perturb.h``.
"""

from __future__ import annotations

import torch
from torch import Tensor

NORM_TINY = 1e-12


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the ops compute in for a storage dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _column(value: float | Tensor, like: Tensor) -> float | Tensor:
    """A float as is; a per-sample [B] tensor as a [B, 1, ..., 1] column in like's dtype, negatives and NaN
    read as 0 (as the kernels read unvalidated per-sample values)."""
    if not isinstance(value, Tensor):
        return float(value)
    if value.dim() == 0:
        value = value.expand(like.shape[0])
    value = value.to(like.dtype)
    value = torch.where(value > 0, value, torch.zeros_like(value))
    return value.view(-1, *([1] * (like.dim() - 1)))


def _keep_masked(new: Tensor, old: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return new
    return torch.where(mask.view(-1, *([1] * (old.dim() - 1))), new, old)


def _sample_norm(t: Tensor) -> Tensor:
    """Per-sample L2 norm of a [B, ...] tensor as a [B, 1, ..., 1] column."""
    norm = torch.linalg.vector_norm(t.flatten(1), dim=1)
    return norm.view(-1, *([1] * (t.dim() - 1)))


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
    """``u = g/(||g||+tiny); d = x_adv + alpha*u - x; d *= min(1, eps/||d||); clip(x + d, lo, hi)``."""
    t = math_dtype(x_adv.dtype)
    a, g, xm = x_adv.to(t), grad.to(t), x.to(t)
    eps_, alpha_ = _column(eps, a), _column(alpha, a)
    g = torch.where(torch.isfinite(g), g, torch.zeros_like(g))
    u = g / (_sample_norm(g) + NORM_TINY)
    d = a + alpha_ * u - xm
    d_norm = _sample_norm(d)
    factor = torch.where(d_norm > eps_, eps_ / d_norm, torch.ones_like(d_norm))
    out = torch.clamp(xm + d * factor, lo, hi).to(x_adv.dtype)
    return _keep_masked(out, x_adv, mask)


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
    ``x_adv`` only gives the layout the noise is drawn in (the op draws into x_adv itself).
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f'norm must be "linf" or "l2", got {norm!r}')
    t = math_dtype(x_adv.dtype)
    noise = torch.empty_like(x_adv)
    xm = x.to(t)
    eps_ = _column(eps, xm)
    if norm == "linf":
        noise.uniform_(-1.0, 1.0, generator=generator)
        return torch.clamp(xm + eps_ * noise.to(t), lo, hi).to(x_adv.dtype)
    noise.normal_(0.0, 1.0, generator=generator)
    z = noise.to(t)
    per_sample = z[0].numel() if z.shape[0] > 0 else 1
    u = torch.rand(z.shape[0], generator=generator, dtype=t, device=z.device)
    r = u.pow_(1.0 / per_sample).view(-1, *([1] * (z.dim() - 1)))
    scale = eps_ * r / (_sample_norm(z) + NORM_TINY)
    return torch.clamp(xm + z * scale, lo, hi).to(x_adv.dtype)
