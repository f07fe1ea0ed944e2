"""Learning-rate schedules as a factor of the base rate, by training progress p = step / total_steps."""

from __future__ import annotations

import math
from collections.abc import Callable

Schedule = Callable[[float], float]


def constant(p: float) -> float:
    return 1.0


def cosine(p: float) -> float:
    """``(1 + cos(pi p)) / 2``: from 1 down to 0."""
    return 0.5 * (1.0 + math.cos(math.pi * min(max(p, 0.0), 1.0)))


def one_cycle(p: float, peak_at: float = 0.4) -> float:
    """Linear up from 0 to 1 at ``peak_at``, then linear down to 0 (the cyclic rate of Wong et al., 2020)."""
    p = min(max(p, 0.0), 1.0)
    return p / peak_at if p < peak_at else (1.0 - p) / (1.0 - peak_at)


def piecewise(p: float) -> float:
    """1, then 0.1 from half of training, 0.01 from three quarters (Madry et al.; Rice et al., 2020)."""
    return 1.0 if p < 0.5 else (0.1 if p < 0.75 else 0.01)


def adaptive(p: float, total_steps: int = 1) -> float:
    """``1 / sqrt(1 + t)`` in steps t: the decay of adaptive-rate analyses (e.g. AdaGrad-style 1/sqrt(t))."""
    return 1.0 / math.sqrt(1.0 + p * total_steps)


SCHEDULES: dict[str, Callable[..., float]] = {
    "constant": constant,
    "cosine": cosine,
    "one-cycle": one_cycle,
    "piecewise": piecewise,
    "adaptive": adaptive,
}


def learning_rate_factor(name: str, step: int, total_steps: int) -> float:
    """The schedule's factor at ``step`` of ``total_steps``."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {name!r}")
    p = step / max(total_steps, 1)
    if name == "adaptive":
        return adaptive(p, total_steps)
    return SCHEDULES[name](p)


def ramp(step: int, total_steps: int, warmup_fraction: float) -> float:
    """A linear ramp from 0 to 1 over the first ``warmup_fraction`` of training (1 throughout when 0): used
    for eps, since adversarial training from the full radius at the first step can collapse."""
    if warmup_fraction <= 0:
        return 1.0
    return min(1.0, (step + 1) / max(1.0, warmup_fraction * total_steps))
