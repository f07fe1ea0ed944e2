"""Argument checks of the attacks: every error names the argument and what was wrong with it."""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor

NORMS = ("linf", "l2")
FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

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
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
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


def check_per_sample(name: str, value: PerSample, x: Tensor, *, positive: bool) -> PerSample:
    """A float, or a [B] (or 0-d) floating tensor on x's device; finite and >= 0 (> 0 when positive)."""
    bound = "> 0" if positive else ">= 0"
    if isinstance(value, Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a float or a floating tensor, got a {value.dtype} tensor")
        if value.dim() == 0:
            value = value.expand(x.shape[0])
        if value.shape != (x.shape[0],):
            raise ValueError(f"{name} per sample must have shape [B] = [{x.shape[0]}], got {tuple(value.shape)}")
        if value.device != x.device:
            raise ValueError(f"{name} must be on x's device ({x.device}), got {value.device}")
        bad = ~torch.isfinite(value) | ((value <= 0) if positive else (value < 0))
        if bool(bad.any()):
            raise ValueError(f"{name} must be finite and {bound} for every sample")
        return value
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a float or a [B] tensor, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or (value <= 0 if positive else value < 0):
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return value


def check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


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
