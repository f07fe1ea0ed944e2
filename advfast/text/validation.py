"""Argument checks of the text adversaries and evaluations: every error names the argument."""

from __future__ import annotations

import math
from numbers import Real

import torch

from advfast.attacks.validation import check_generator
from advfast.checks import check_choice, check_count

__all__ = ["check_choice", "check_count", "check_generator", "check_radius", "check_scalar"]


def check_scalar(name: str, value: object, *, positive: bool = False, allow_inf: bool = False) -> float:
    """A real number, not NaN, ``>= 0`` (``> 0`` when ``positive``); infinite only when ``allow_inf``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    bound = "> 0" if positive else ">= 0"
    if math.isnan(value) or (math.isinf(value) and not allow_inf) or (value <= 0 if positive else value < 0):
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return value


def check_radius(name: str, value: object) -> float:
    """A radius: ``None`` or ``inf`` means unbounded (returned as ``inf``), otherwise finite and ``>= 0``."""
    if value is None:
        return math.inf
    return check_scalar(name, value, allow_inf=True)


def check_generator_for(generator: torch.Generator | None, device: torch.device) -> None:
    """The generator (if any) draws on ``device``'s type."""
    if generator is not None:
        check_generator(generator, torch.empty(0, device=device))
