"""What :func:`advfast.eval.evaluate_robustness` measured: accuracies, per-class metrics, the extra attack
runs behind the gradient-masking checks and what they found, costs, and the per-sample predictions they all
come from. Plain records: this module imports nothing else of advfast.eval (the checks import it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass(frozen=True)
class SanityWarning:
    """A failed gradient-masking check: its name (a key of :data:`advfast.eval.sanity.CHECKS`) and what was
    measured."""

    check: str
    message: str

    def __str__(self) -> str:
        return f"{self.check}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"check": self.check, "message": self.message}


@dataclass
class ClassReport:
    """Per-class precision, recall, F1 and support of one set of predictions (scikit-learn's
    ``precision_recall_fscore_support`` with every class ``0..C-1`` listed, 0 where undefined)::

        precision_c = TP_c / (TP_c + FP_c),  recall_c = TP_c / (TP_c + FN_c),  F1_c = 2 P_c R_c / (P_c + R_c)

    and the confusion matrix (row: true class, column: predicted class).
    """

    name: str  # "clean", or the attack and eps, e.g. "pgd eps=0.3"
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    confusion: list[list[int]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
            "confusion": self.confusion,
        }


@dataclass
class AttackRun:
    """One attack over the whole data at one eps, with its accuracy and per-sample predictions [N]."""

    attack: str  # a registry name ("pgd" for the sanity runs)
    eps: float
    steps: int
    restarts: int
    random_start: bool
    accuracy: float
    predictions: Tensor = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "eps": self.eps,
            "steps": self.steps,
            "restarts": self.restarts,
            "random_start": self.random_start,
            "accuracy": self.accuracy,
        }


@dataclass
class StageRecord:
    """An ensemble's stages (e.g. AutoAttack's "clean", "apgd-ce", "apgd-t", "square"): the robust accuracy
    after each stage at each eps, the seconds each took (over all eps), and per sample the stage that broke it
    (``broken_by`` [len(eps), N] int8: 0 misclassified clean, j the j-th attack, -1 never broken)."""

    stages: list[str]
    accuracy: list[dict[str, float]]  # accuracy[i][stage] at eps[i]
    seconds: dict[str, float]
    broken_by: Tensor = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"stages": self.stages, "accuracy": self.accuracy, "seconds": self.seconds}


@dataclass
class RobustnessResult:
    """Clean and robust accuracy of a model on a data set.

    ``accuracy[attack][i]`` is the accuracy under ``attack`` (a name of the attack registry,
    :data:`advfast.eval.attacks.ATTACKS`, run with ``settings[attack]``) at ``eps[i]`` (``eps`` sorted,
    increasing): the fraction of samples whose adversarial example the model still classifies correctly. The
    per-sample predictions behind every number are kept (``labels``, ``clean_predictions``, ``predictions``, and
    those of the ``sanity_runs``), on the CPU, in the order the data gave the samples.
    """

    eps: list[float]
    norm: str
    attacks: list[str]
    settings: dict[str, dict[str, Any]]  # attack -> its settings (steps, restarts, queries, ...)
    bounds: tuple[float, float]
    seed: int
    num_samples: int
    num_classes: int
    clean_accuracy: float
    accuracy: dict[str, list[float]]
    per_class: list[ClassReport]
    seconds: dict[str, float]  # wall time per part ("clean", each attack, "sanity") and "total"
    sanity_runs: dict[str, AttackRun]  # the extra attacks behind the gradient-masking checks
    sanity_checks: list[str]  # the checks that were run
    warnings: list[SanityWarning]  # the checks that failed
    labels: Tensor = field(repr=False)  # [N] int64
    clean_predictions: Tensor = field(repr=False)  # [N] int64
    predictions: dict[str, Tensor] = field(repr=False)  # attack -> [len(eps), N] int64
    stages: dict[str, StageRecord] = field(default_factory=dict)  # ensemble attack -> its stages

    @property
    def chance_accuracy(self) -> float:
        """1 / C: the accuracy of guessing a class uniformly at random."""
        return 1.0 / self.num_classes

    def correct(self, attack: str | None = None, index: int = -1) -> Tensor:
        """Per-sample correctness [N] (bool): on clean inputs when ``attack`` is None, else under ``attack``
        at ``eps[index]``."""
        predicted = self.clean_predictions if attack is None else self.predictions[attack][index]
        return predicted == self.labels

    def to_dict(self) -> dict[str, Any]:
        """Everything but the per-sample tensors, as JSON-ready values (lists, dicts, numbers, strings)."""
        return {
            "eps": self.eps,
            "norm": self.norm,
            "attacks": self.attacks,
            "settings": {name: _json_ready(values) for name, values in self.settings.items()},
            "bounds": list(self.bounds),
            "seed": self.seed,
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "clean_accuracy": self.clean_accuracy,
            "accuracy": self.accuracy,
            "stages": {name: record.to_dict() for name, record in self.stages.items()},
            "per_class": [report.to_dict() for report in self.per_class],
            "seconds": self.seconds,
            "sanity_runs": {name: run.to_dict() for name, run in self.sanity_runs.items()},
            "sanity_checks": self.sanity_checks,
            "warnings": [warning.to_dict() for warning in self.warnings],
        }


def _json_ready(settings: dict[str, Any]) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in settings.items()}
