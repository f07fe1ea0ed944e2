"""Perturbations of token embeddings ``delta [B, L, D]`` and their updates.

Groups: a perturbation is normed per *sequence* (the ``L*D`` entries of a sequence form one sample: FGM, PGD,
FreeLB, the embedding attack) or per *token* (each token's ``D`` entries: SMART). The fused ops
(:mod:`advfast.ops`) see ``delta`` as ``[B, L*D]`` or ``[B*L, D]`` samples, with the clean point at 0 and
bounds ``(-inf, inf)``, so a step updates ``delta`` in place in one pass.

Tokens that may not move (padding, special tokens) stay at 0: every initial perturbation is multiplied by
the movable mask, and every gradient is masked before a step, so the step moves them by 0 and the norms
count only the movable tokens. A sample whose gradient holds a NaN or an infinity is not moved at all (a
per-sample mask to the op). Norms are taken in float32 (the ops' math; the eager updates below cast to
float32) whatever the storage dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from advfast import ops

INF = math.inf
NORM_FLOOR = 1e-8  # FreeLB's clamp(min=1e-8) of the gradient norm in its L-inf step
# The ops take finite radii only; an unbounded ball is the largest float32 (no norm reaches it).
UNBOUNDED = float(torch.finfo(torch.float32).max)


def _op_radius(eps: float | Tensor) -> float | Tensor:
    return UNBOUNDED if isinstance(eps, float) and eps == INF else eps


def group_view(t: Tensor, per_token: bool) -> Tensor:
    """``[B, L, D]`` as ``[B*L, D]`` (per token) or ``[B, L*D]`` (per sequence); no copy for contiguous t."""
    return t.reshape(-1, t.shape[-1]) if per_token else t.reshape(t.shape[0], -1)


def masked_gradient(grad: Tensor, movable: Tensor) -> Tensor:
    """``grad * movable`` (contiguous, grad's dtype): frozen tokens get a zero gradient."""
    return (grad * movable.unsqueeze(-1).to(grad.dtype)).contiguous()


def finite_samples(grad: Tensor, per_token: bool) -> Tensor:
    """Per sequence ([B]) whether its gradient is all finite, expanded to [B*L] for per-token groups."""
    finite = torch.isfinite(grad.reshape(grad.shape[0], -1)).all(dim=1)
    return finite.repeat_interleave(grad.shape[1]) if per_token else finite


def l2_step_(
    delta: Tensor,
    grad: Tensor,
    movable: Tensor,
    *,
    eps: float | Tensor,
    alpha: float | Tensor,
    per_token: bool = False,
    active: Tensor | None = None,
    origin: Tensor | None = None,
) -> Tensor:
    """Fused L2 ascent step, per group ``b``: ``u = g_b / (||g_b|| + 1e-12)``; ``d = delta_b + alpha * u``;
    ``delta_b <- d * min(1, eps / ||d||)`` (``advfast.ops.l2_step_`` with x = 0, bounds ``(-inf, inf)``).

    ``grad`` [B, L, D] is masked by ``movable`` [B, L] first; ``active`` ([B] or [B*L] bool) freezes groups
    (early stop); non-finite gradients freeze their sequence. ``eps``: a float (``inf``: no projection) or a
    per-group tensor. ``origin``: a zero tensor like ``delta`` to reuse across steps. Returns ``delta``.
    """
    g = masked_gradient(grad, movable)
    keep = finite_samples(g, per_token)
    if active is not None:
        keep = keep & active
    zero = torch.zeros_like(delta) if origin is None else origin
    with torch.no_grad():
        ops.l2_step_(
            group_view(delta, per_token),
            group_view(g, per_token),
            group_view(zero, per_token),
            _op_radius(eps),
            alpha,
            -INF,
            INF,
            keep,
        )
    return delta


def sign_step_(
    delta: Tensor,
    grad: Tensor,
    movable: Tensor,
    *,
    eps: float | Tensor,
    alpha: float | Tensor,
    active: Tensor | None = None,
    origin: Tensor | None = None,
) -> Tensor:
    """Fused L-inf ascent step: ``delta <- clip(delta + alpha * sign(g), -eps, eps)`` per entry
    (``advfast.ops.linf_step_`` with x = 0); masking and freezing as in :func:`l2_step_` (per sequence)."""
    g = masked_gradient(grad, movable)
    keep = finite_samples(g, per_token=False)
    if active is not None:
        keep = keep & active
    zero = torch.zeros_like(delta) if origin is None else origin
    with torch.no_grad():
        ops.linf_step_(
            group_view(delta, False), group_view(g, False), group_view(zero, False), eps, alpha, -INF, INF, keep
        )
    return delta


def max_scaled_step_(
    delta: Tensor, grad: Tensor, movable: Tensor, *, eps: float, alpha: float, per_token: bool
) -> Tensor:
    """FreeLB's L-inf step (and SMART's in its paper form), eager: per group,
    ``delta <- clip(delta + alpha * g / max(||g||_inf, 1e-8), -eps, eps)``.

    The fused L-inf op steps along ``sign(g)``; this update divides by the group's largest ``|g|`` instead,
    so entries move in proportion to their gradient, as FreeLB's reference code does. Computed in float32.
    """
    g = masked_gradient(grad, movable).float()
    keep = (
        finite_samples(g, per_token).view(*delta.shape[:2], 1) if per_token else finite_samples(g, False).view(-1, 1, 1)
    )
    grouped = group_view(g, per_token)
    scale = grouped.abs().amax(dim=1, keepdim=True).clamp(min=NORM_FLOOR)
    moved = delta.float() + alpha * (grouped / scale).view_as(g)
    if eps != INF:
        moved = moved.clamp(-eps, eps)
    with torch.no_grad():
        delta.copy_(torch.where(keep, moved, delta.float()))
    return delta


def sphere_step_(
    delta: Tensor, grad: Tensor, movable: Tensor, *, eps: float, alpha: float, norm: str, tiny: float = 1e-6
) -> Tensor:
    """SMART's update in its reference code (mt-dnn ``SmartPerturbation``), eager, per token:
    ``s = delta + alpha * g``; ``delta <- eps * s / (||s||_p + tiny)`` with ``p`` = 2 or inf.

    The step is along the raw gradient and the result is rescaled onto the sphere of radius ``eps`` (the
    reference's radius is 1), not projected onto a ball after a normalised step as the fused ops do; so it
    runs eagerly in float32. Frozen tokens have ``s = 0`` and stay at 0.
    """
    g = masked_gradient(grad, movable).float()
    keep = finite_samples(g, per_token=False).view(-1, 1, 1)
    s = delta.float() + alpha * g
    size = s.norm(dim=-1, keepdim=True) if norm == "l2" else s.abs().amax(dim=-1, keepdim=True)
    moved = eps * s / (size + tiny)
    with torch.no_grad():
        delta.copy_(torch.where(keep, moved, delta.float()))
    return delta


def freelb_init(
    like: Tensor, movable: Tensor, lengths: Tensor, *, init_mag: float, norm: str, generator: torch.Generator | None
) -> Tensor:
    """FreeLB's initial perturbation (its reference code, ``adv_init_mag``):
    l2: ``U(-1, 1) * movable * init_mag / sqrt(L_b * D)`` with ``L_b`` the sequence's real length (attention
    mask sum); linf: ``U(-init_mag, init_mag) * movable``. Zeros when ``init_mag`` is 0. Shape and dtype of
    ``like`` [B, L, D]; noise drawn by ``torch.empty_like(like).uniform_(-1, 1, generator=generator)``."""
    if init_mag == 0:
        return torch.zeros_like(like)
    noise = torch.empty_like(like).uniform_(-1.0, 1.0, generator=generator)
    mask = movable.unsqueeze(-1).to(like.dtype)
    if norm == "l2":
        scale = init_mag / torch.sqrt(lengths.clamp(min=1.0) * like.shape[-1])
        return noise * mask * scale.view(-1, 1, 1).to(like.dtype)
    return noise * mask * init_mag


def ball_start(
    like: Tensor, movable: Tensor, *, eps: float | Tensor, norm: str, generator: torch.Generator | None
) -> Tensor:
    """A uniform random point of each sequence's eps-ball within its movable tokens (PGD's random start).

    l2: ``z ~ N(0, I)`` on the movable entries, ``delta = eps * r * z / ||z||`` with ``r = U^(1/n_b)``, ``n_b`` the
    sequence's movable entries (uniform in that n_b-dimensional ball); linf: ``eps * U(-1, 1)`` per movable entry.
    (``advfast.ops.random_start_`` draws over every entry of a sample, which would shrink the ball of short
    sequences once padding is masked; this start is cheap and eager.) ``eps``: float or [B] tensor.
    """
    mask = movable.unsqueeze(-1).to(torch.float32)
    eps_column = eps.float().view(-1, 1, 1) if isinstance(eps, Tensor) else float(eps)
    if norm == "linf":
        noise = torch.empty(like.shape, dtype=torch.float32, device=like.device).uniform_(
            -1.0, 1.0, generator=generator
        )
        return (noise * mask * eps_column).to(like.dtype)
    z = torch.empty(like.shape, dtype=torch.float32, device=like.device).normal_(generator=generator) * mask
    entries = (movable.sum(dim=1) * like.shape[-1]).clamp(min=1).float()
    u = torch.rand(like.shape[0], dtype=torch.float32, device=like.device, generator=generator)
    radius = u.pow(1.0 / entries).view(-1, 1, 1)
    z_norm = z.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1)
    return (z * (eps_column * radius / z_norm)).to(like.dtype)
