"""Adversarial-training objectives, by name. Adding one is adding a file and a line here."""

from __future__ import annotations

from typing import Any

from advfast.train.objectives.base import AttackSettings, BatchLoss, Objective, Standard
from advfast.train.objectives.fgsm_rs import FGSMRS
from advfast.train.objectives.free import Free
from advfast.train.objectives.grad_align import GradAlign
from advfast.train.objectives.mixed import Mixed
from advfast.train.objectives.n_fgsm import NFGSM
from advfast.train.objectives.pgd_at import PGDAT
from advfast.train.objectives.trades import TRADES

OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls for cls in (Standard, Mixed, PGDAT, FGSMRS, NFGSM, Free, TRADES, GradAlign)
}


def make_objective(config: Any) -> Objective:
    """The objective ``config.method`` names, built from the (resolved) training config."""
    if config.method not in OBJECTIVES:
        raise ValueError(f"method must be one of {sorted(OBJECTIVES)}, got {config.method!r}")
    return OBJECTIVES[config.method].from_config(config)


__all__ = [
    "FGSMRS",
    "NFGSM",
    "OBJECTIVES",
    "PGDAT",
    "TRADES",
    "AttackSettings",
    "BatchLoss",
    "Free",
    "GradAlign",
    "Mixed",
    "Objective",
    "Standard",
    "make_objective",
]
