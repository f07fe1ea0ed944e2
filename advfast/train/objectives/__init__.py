"""Adversarial-training objectives, by name. Adding one is adding a file and a line here."""

from __future__ import annotations

from advfast.train.objectives.base import AttackSettings, BatchLoss, Objective, Standard
from advfast.train.objectives.fgsm_rs import FGSMRS
from advfast.train.objectives.free import Free
from advfast.train.objectives.mixed import Mixed
from advfast.train.objectives.pgd_at import PGDAT
from advfast.train.objectives.trades import TRADES

OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in (Standard, Mixed, PGDAT, FGSMRS, Free, TRADES)}


def make_objective(
    method: str,
    attack: AttackSettings,
    *,
    lam: float = 1.0,
    inner: str = "fgsm",
    beta: float = 6.0,
    replays: int = 8,
) -> Objective:
    """The objective called ``method`` with its own hyper-parameters taken from the keywords."""
    if method not in OBJECTIVES:
        raise ValueError(f"method must be one of {sorted(OBJECTIVES)}, got {method!r}")
    if method == "mixed":
        return Mixed(attack, lam=lam, inner=inner)
    if method == "trades":
        return TRADES(attack, beta=beta)
    if method == "free":
        return Free(attack, replays=replays)
    return OBJECTIVES[method](attack)


__all__ = [
    "FGSMRS",
    "OBJECTIVES",
    "PGDAT",
    "TRADES",
    "AttackSettings",
    "BatchLoss",
    "Free",
    "Mixed",
    "Objective",
    "Standard",
    "make_objective",
]
