"""Robust evaluation: clean and robust accuracy over eps under the attacks of a registry (FGSM, PGD-K,
APGD-CE, APGD-T, Square, AutoAttack), per-class metrics, gradient-masking sanity checks, and reports (JSON,
Markdown, PNG).

    result = advfast.eval.evaluate_robustness(model, (x, y), eps=[2/255, 4/255, 8/255], attacks=["autoattack"])
    advfast.eval.write_report(result, "runs/cifar", extra={"train_seconds_per_epoch": 41.2})
    aa = advfast.eval.autoattack(model, x, y, eps=8/255)      # per point, per stage
"""

from advfast.eval.attacks import ATTACKS, AttackOutput, AttackSpec, get_attack
from advfast.eval.auto_attack import AutoAttackResult, autoattack
from advfast.eval.batches import EvalData
from advfast.eval.ensemble import EnsembleResult, run_ensemble
from advfast.eval.plots import save_robustness_plot, save_training_curves
from advfast.eval.predict import model_device, predict
from advfast.eval.published import MNIST_ANCHORS, Published, published_for
from advfast.eval.report import markdown_report, write_report
from advfast.eval.result import AttackRun, ClassReport, RobustnessResult, SanityWarning, StageRecord
from advfast.eval.robustness import DEFAULT_ATTACKS, evaluate_robustness
from advfast.eval.run_report import headline, report_run
from advfast.eval.sanity import (
    CHECKS,
    GradientMaskingWarning,
    check_gradient_masking,
    tolerance,
)

__all__ = [
    "ATTACKS",
    "CHECKS",
    "DEFAULT_ATTACKS",
    "MNIST_ANCHORS",
    "AttackOutput",
    "AttackRun",
    "AttackSpec",
    "AutoAttackResult",
    "ClassReport",
    "EnsembleResult",
    "EvalData",
    "GradientMaskingWarning",
    "Published",
    "RobustnessResult",
    "SanityWarning",
    "StageRecord",
    "autoattack",
    "check_gradient_masking",
    "evaluate_robustness",
    "get_attack",
    "headline",
    "markdown_report",
    "model_device",
    "predict",
    "published_for",
    "report_run",
    "run_ensemble",
    "save_robustness_plot",
    "save_training_curves",
    "tolerance",
    "write_report",
]
