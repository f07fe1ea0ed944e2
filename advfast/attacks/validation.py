"""Argument checks of the attacks: every error names the argument and what was wrong with it."""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor, nn

from advfast.reference import math_dtype

NORMS = ("linf", "l2")
FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
LABEL_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)

PerSample = float | Tensor


def check_inputs(x: Tensor, y: Tensor, bounds: tuple[float, float]) -> tuple[float, float]:
    """x: a floating [B, ...] batch, finite and inside bounds; y: int64 [B] labels on x's device."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x must be float32, float64, float16 or bfloat16, got {x.dtype}")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch [B, ...], got shape {tuple(x.shape)}")
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.dtype not in LABEL_DTYPES:
        raise TypeError(f"y must hold integer class indices, got {y.dtype}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape [B] = [{x.shape[0]}], got {tuple(y.shape)}")
    if y.device != x.device:
        raise ValueError(f"y must be on x's device ({x.device}), got {y.device}")
    lo, hi = check_bounds(bounds)
    # One host synchronisation for all value checks.
    nonfinite, below, above = torch.stack([~torch.isfinite(x).all(), (x < lo).any(), (x > hi).any()]).tolist()
    if nonfinite:
        raise ValueError("x contains NaN or Inf")
    if below or above:
        raise ValueError(f"x has values outside bounds [{lo}, {hi}]; pass bounds= that contain the data")
    return lo, hi


def check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise TypeError(f"bounds must be a pair (lo, hi) of floats, got {bounds!r}") from None
    if math.isnan(lo) or math.isnan(hi) or not lo < hi:
        raise ValueError(f"bounds must satisfy lo < hi, got {bounds!r}")
    return lo, hi


def as_class_indices(y: Tensor) -> Tensor:
    """y (already checked by check_inputs) as int64, the dtype torch's losses take class indices in."""
    return y if y.dtype == torch.int64 else y.long()


def check_per_sample(name: str, value: PerSample, x: Tensor, *, positive: bool) -> PerSample:
    """A real number, or a [B] (or 0-d) floating tensor on x's device; finite in the dtype the attack computes
    in (float32 for float32 and the half types, float64 for float64) and >= 0 (> 0 when positive)."""
    bound = "> 0" if positive else ">= 0"
    math_type = math_dtype(x.dtype)
    where = f"in {str(math_type).removeprefix('torch.')} (the dtype the attack computes in for {x.dtype} x)"
    if isinstance(value, Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a float or a floating tensor, got a {value.dtype} tensor")
        if value.dim() == 0:
            value = value.expand(x.shape[0])
        if value.shape != (x.shape[0],):
            raise ValueError(f"{name} per sample must have shape [B] = [{x.shape[0]}], got {tuple(value.shape)}")
        if value.device != x.device:
            raise ValueError(f"{name} must be on x's device ({x.device}), got {value.device}")
        in_math = value.to(math_type)
        bad = ~torch.isfinite(in_math) | ((in_math <= 0) if positive else (in_math < 0))
        if bool(bad.any()):
            raise ValueError(f"{name} must be finite and {bound} for every sample, {where}")
        return value
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a float or a [B] tensor, got {type(value).__name__}")
    value = float(value)
    limit = torch.finfo(math_type).max
    if not math.isfinite(value) or abs(value) > limit or (value <= 0 if positive else value < 0):
        raise ValueError(f"{name} must be finite and {bound} {where}, got {value:g}")
    return value


def check_model_dtype(model: object, x: Tensor) -> None:
    """An nn.Module whose floating parameters share one dtype must take x in that dtype (outside autocast,
    which casts for it): say so here, instead of torch's matmul error deep inside the forward."""
    if not isinstance(model, nn.Module) or torch.is_autocast_enabled(x.device.type):
        return
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if len(dtypes) == 1 and x.dtype not in dtypes:
        (param_dtype,) = dtypes
        raise TypeError(
            f"x is {x.dtype} but the model's parameters are {param_dtype}: convert one to the other, e.g. "
            f"x.to({param_dtype}) or model.to({x.dtype})"
        )


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def check_generator(generator: torch.Generator | None, x: Tensor) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != x.device.type:
        raise ValueError(f"generator must be on x's device type ({x.device.type}), got {generator.device}")


def check_logits(logits: object, y: Tensor) -> int:
    """The model's output: [B, C] logits; every label in y must index a class. Returns C."""
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != y.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"model must return logits of shape [B, C] = [{y.shape[0]}, C], got {shape}")
    classes = logits.shape[1]
    low, high = torch.stack([(y < 0).any(), (y >= classes).any()]).tolist()
    if low or high:
        raise ValueError(f"y has labels outside [0, {classes}) for a model with {classes} outputs")
    return classes
