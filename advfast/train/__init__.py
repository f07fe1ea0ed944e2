"""Adversarial training of image classifiers: objectives usable in your own loop (one call per batch), a trainer
with checkpoints, exact resume and torchrun support, and loading what it saved.

    objective = PGDAT(AttackSettings(eps=0.3, steps=10))
    for x, y in loader:
        loss = objective(model, x, y).loss
        optimizer.zero_grad(); loss.backward(); objective.after_backward(); optimizer.step()

    trained = load_classifier("runs/mnist-pgd")      # the model in eval mode, its config, its record
"""

from advfast.train.config import TrainConfig
from advfast.train.health import diagnose
from advfast.train.objectives import (
    FGSMRS,
    NFGSM,
    OBJECTIVES,
    PGDAT,
    TRADES,
    AttackSettings,
    BatchLoss,
    Free,
    GradAlign,
    Mixed,
    Objective,
    Standard,
    make_objective,
)
from advfast.train.saved import TrainedClassifier, load_classifier
from advfast.train.schedules import SCHEDULES, learning_rate_factor
from advfast.train.trainer import Trainer

__all__ = [
    "FGSMRS",
    "NFGSM",
    "OBJECTIVES",
    "PGDAT",
    "SCHEDULES",
    "TRADES",
    "AttackSettings",
    "BatchLoss",
    "Free",
    "GradAlign",
    "Mixed",
    "Objective",
    "Standard",
    "TrainConfig",
    "TrainedClassifier",
    "Trainer",
    "diagnose",
    "learning_rate_factor",
    "load_classifier",
    "make_objective",
]
