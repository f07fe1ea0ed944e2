"""Typed wrappers over ``torch.ops.advfast.*``, the fused in-place perturbation ops, and their fake kernels.

Shapes: ``x_adv``, ``grad`` and ``x`` are ``[B, ...]`` (any trailing shape, any layout; contiguous and
channels_last run at full speed, other strides take one copy). ``eps`` and ``alpha`` are a float or a ``[B]``
floating tensor; ``mask`` is a ``[B]`` bool tensor (False leaves that sample untouched). Storage dtypes
float32, float64, float16 and bfloat16; the math runs in float32 (float64 for float64). Every op writes
``x_adv`` in place and returns it. The pure-PyTorch statement of each op is in :mod:`advfast.reference`.

Scalars: a float ``eps``/``alpha``/``eta`` must be finite and >= 0 in the math dtype (1e39 is an error for
float32), else the op raises naming it. Per-sample tensors are not checked (that would synchronise with the
device): an entry that is negative, NaN or infinite counts as 0 (that sample does not move). The bounds are
intersected with the finite range of x_adv's dtype, so every result is finite, inside [lo, hi] and inside the
eps-ball. No per-sample tensor or mask may share memory with a tensor the op writes.
"""

from __future__ import annotations

from numbers import Real

import torch
from torch import Tensor

from advfast._extension import has_cuda_kernels

__all__ = ["apgd_step_", "l2_step_", "linf_step_", "random_start_"]

PerSample = float | Tensor

_HAS_CUDA_KERNELS = has_cuda_kernels()


def _split(name: str, value: PerSample, x_adv: Tensor) -> tuple[float, Tensor | None]:
    """A float for the op's scalar slot, or a [B] tensor for its per-sample slot (0-d tensors broadcast)."""
    if isinstance(value, Tensor):
        if value.dim() == 0 and x_adv.dim() >= 1:
            value = value.expand(x_adv.shape[0])
        return 0.0, value
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a float or a [B] tensor, got {type(value).__name__}")
    return float(value), None


def _check_device(x_adv: Tensor) -> None:
    if x_adv.is_cuda and not _HAS_CUDA_KERNELS:
        raise RuntimeError(
            "advfast was built without CUDA kernels (torch was a CPU build or nvcc was missing at build "
            "time); rebuild with a CUDA torch and nvcc on PATH: pip install --no-build-isolation --no-deps ."
        )


def _step(op, x_adv, grad, x, eps, alpha, lo, hi, mask) -> Tensor:
    """Calls a step op with eps and alpha split into its scalar and per-sample slots."""
    _check_device(x_adv)
    eps_f, eps_t = _split("eps", eps, x_adv)
    alpha_f, alpha_t = _split("alpha", alpha, x_adv)
    op(x_adv, grad, x, eps_f, alpha_f, float(lo), float(hi), eps_t, alpha_t, mask)
    return x_adv


def linf_step_(
    x_adv: Tensor,
    grad: Tensor,
    x: Tensor,
    eps: PerSample,
    alpha: PerSample,
    lo: float = 0.0,
    hi: float = 1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """One L-inf ascent step, projected and clipped, in one pass over memory.

    ``x_adv <- clip( x + clip( x_adv + alpha * sign(grad) - x, -eps, eps ), lo, hi )``

    A NaN or infinite ``grad`` entry counts as 0 (moves nothing). In float32 the result equals the eager
    formula (:func:`advfast.reference.linf_step`) bit for bit.
    """
    return _step(torch.ops.advfast.linf_step_, x_adv, grad, x, eps, alpha, lo, hi, mask)


def l2_step_(
    x_adv: Tensor,
    grad: Tensor,
    x: Tensor,
    eps: PerSample,
    alpha: PerSample,
    lo: float = 0.0,
    hi: float = 1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """One L2 ascent step along the normalised gradient, projected onto the eps-ball and clipped.

    Per sample b, with norms over all of a sample's elements::

        u = g / (||g_b||_2 + 1e-12)
        d = x_adv + alpha * u - x
        d = d * min(1, eps / ||d_b||_2)
        x_adv <- clip(x + d, lo, hi)

    NaN or infinite ``grad`` entries count as 0. Norms accumulate in float64 on the CPU.
    """
    return _step(torch.ops.advfast.l2_step_, x_adv, grad, x, eps, alpha, lo, hi, mask)


def random_start_(
    x_adv: Tensor,
    x: Tensor,
    eps: PerSample,
    norm: str = "linf",
    lo: float = 0.0,
    hi: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Overwrite ``x_adv`` with a uniform random point of the eps-ball around ``x``, clipped to [lo, hi].

    ``linf``: ``x_adv = clip(x + eps * n, lo, hi)`` with ``n ~ U[-1, 1]`` per element.
    ``l2``: ``x_adv = clip(x + z * eps * r / ||z_b||, lo, hi)`` with ``z ~ N(0, I)`` and ``r = U^(1/n)``
    (n = elements per sample), which is uniform in the n-dimensional ball.
    The noise comes from ``generator`` (or torch's default), so a seeded generator reproduces the start.
    """
    _check_device(x_adv)
    eps_f, eps_t = _split("eps", eps, x_adv)
    torch.ops.advfast.random_start_(x_adv, x, eps_f, norm, float(lo), float(hi), eps_t, generator)
    return x_adv


def apgd_step_(
    x_adv: Tensor,
    x_prev: Tensor,
    grad: Tensor,
    x: Tensor,
    eps: PerSample,
    eta: PerSample,
    momentum: float = 0.75,
    lo: float = 0.0,
    hi: float = 1.0,
    norm: str = "linf",
    mask: Tensor | None = None,
) -> Tensor:
    """One APGD momentum step (Croce & Hein, 2020), in place on ``x_adv`` and ``x_prev``.

    With ``P`` the projection onto the eps-ball around ``x`` intersected with [lo, hi] and ``mu`` the
    momentum (APGD: 1.0 at its first iteration, 0.75 after), per sample b::

        z      = P(x_adv + eta * s(grad))
        x_adv <- P(x_adv + (z - x_adv) * mu + (x_adv - x_prev) * (1 - mu))
        x_prev <- the old x_adv

        linf: s(g) = sign(g),            P(v) = clip(min(max(v, x - eps), x + eps), lo, hi)
        l2:   s(g) = g / (||g_b|| + 1e-12), P(v) = clip(x + (v - x) * min(1, eps / ||(v - x)_b||), lo, hi)

    norms over all of a sample's elements. ``eps`` and ``eta`` are floats or ``[B]`` tensors (APGD halves
    eta per sample); ``mask`` [B] bool: False leaves that sample's x_adv and x_prev untouched, bit for bit.
    NaN or infinite ``grad`` entries count as 0. In float32 the L-inf step equals
    :func:`advfast.reference.apgd_step` bit for bit; L2 within the rounding of the norms. x_adv, x_prev,
    grad and x must not share memory.

    Returns:
        ``x_adv`` (its new value; ``x_prev`` holds the value it had before the call).
    """
    _check_device(x_adv)
    eps_f, eps_t = _split("eps", eps, x_adv)
    eta_f, eta_t = _split("eta", eta, x_adv)
    if isinstance(momentum, bool) or not isinstance(momentum, Real):
        raise TypeError(f"momentum must be a float in [0, 1], got {type(momentum).__name__}")
    torch.ops.advfast.apgd_step_(
        x_adv, x_prev, grad, x, eps_f, eta_f, float(momentum), float(lo), float(hi), norm, eps_t, eta_t, mask
    )
    return x_adv


# ---- fake (meta) kernels: shape/dtype/device checks only, so torch.compile can trace the ops -------------


def _fake_check_like(op: str, x_adv: Tensor, other: Tensor, name: str) -> None:
    torch._check(x_adv.dim() >= 1, lambda: f"{op}: x_adv must have a batch dimension")
    torch._check(other.shape == x_adv.shape, lambda: f"{op}: {name} must have the shape of x_adv {tuple(x_adv.shape)}")
    torch._check(other.dtype == x_adv.dtype, lambda: f"{op}: {name} must have the dtype of x_adv")
    torch._check(other.device == x_adv.device, lambda: f"{op}: {name} must be on the device of x_adv")


def _fake_check_per_sample(op: str, name: str, t: Tensor | None, x_adv: Tensor) -> None:
    """A per-sample tensor or mask: [B] on x_adv's device. (A per-sample tensor on the meta device beside real
    tensors dispatches here, so the device check is what turns that into an error.)"""
    if t is not None:
        torch._check(t.dim() == 1 and t.shape[0] == x_adv.shape[0], lambda: f"{op}: {name} must have shape [B]")
        torch._check(
            t.device == x_adv.device, lambda: f"{op}: {name} per sample must be on {x_adv.device}, got {t.device}"
        )


def _fake_step(op: str):
    def fake(
        x_adv: Tensor,
        grad: Tensor,
        x: Tensor,
        eps: float,
        alpha: float,
        lo: float,
        hi: float,
        eps_per_sample: Tensor | None = None,
        alpha_per_sample: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> None:
        _fake_check_like(op, x_adv, grad, "grad")
        _fake_check_like(op, x_adv, x, "x")
        _fake_check_per_sample(op, "eps", eps_per_sample, x_adv)
        _fake_check_per_sample(op, "alpha", alpha_per_sample, x_adv)
        _fake_check_per_sample(op, "mask", mask, x_adv)

    return fake


torch.library.register_fake("advfast::linf_step_")(_fake_step("advfast::linf_step_"))
torch.library.register_fake("advfast::l2_step_")(_fake_step("advfast::l2_step_"))


@torch.library.register_fake("advfast::random_start_")
def _random_start_fake(
    x_adv: Tensor,
    x: Tensor,
    eps: float,
    norm: str,
    lo: float,
    hi: float,
    eps_per_sample: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> None:
    _fake_check_like("advfast::random_start_", x_adv, x, "x")
    _fake_check_per_sample("advfast::random_start_", "eps", eps_per_sample, x_adv)


@torch.library.register_fake("advfast::apgd_step_")
def _apgd_step_fake(
    x_adv: Tensor,
    x_prev: Tensor,
    grad: Tensor,
    x: Tensor,
    eps: float,
    eta: float,
    momentum: float,
    lo: float,
    hi: float,
    norm: str,
    eps_per_sample: Tensor | None = None,
    eta_per_sample: Tensor | None = None,
    mask: Tensor | None = None,
) -> None:
    op = "advfast::apgd_step_"
    for name, t in (("x_prev", x_prev), ("grad", grad), ("x", x)):
        _fake_check_like(op, x_adv, t, name)
    _fake_check_per_sample(op, "eps", eps_per_sample, x_adv)
    _fake_check_per_sample(op, "eta", eta_per_sample, x_adv)
    _fake_check_per_sample(op, "mask", mask, x_adv)
