"""Adversarial training: objectives usable in your own loop (one call per batch), and a trainer with
checkpoints, exact resume and torchrun support.

    objective = PGDAT(AttackSettings(eps=0.3, steps=10))
    for x, y in loader:
        loss = objective(model, x, y).loss
        optimizer.zero_grad(); loss.backward(); objective.after_backward(); optimizer.step()
"""

from advfast.runtime.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from advfast.train.config import TrainConfig
from advfast.train.objectives import (
    FGSMRS,
    OBJECTIVES,
    PGDAT,
    TRADES,
    AttackSettings,
    BatchLoss,
    Free,
    Mixed,
    Objective,
    Standard,
    make_objective,
)
from advfast.train.schedules import SCHEDULES, learning_rate_factor
from advfast.train.trainer import Trainer

__all__ = [
    "FGSMRS",
    "OBJECTIVES",
    "PGDAT",
    "SCHEDULES",
    "TRADES",
    "AttackSettings",
    "BatchLoss",
    "CheckpointError",
    "Free",
    "Mixed",
    "Objective",
    "Standard",
    "TrainConfig",
    "Trainer",
    "learning_rate_factor",
    "load_checkpoint",
    "make_objective",
    "save_checkpoint",
]
