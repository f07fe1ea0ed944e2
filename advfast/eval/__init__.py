"""Robust evaluation: clean and robust accuracy (FGSM, PGD-K with restarts) over eps, per-class metrics,
gradient-masking sanity checks, and reports (JSON, Markdown, PNG).

    result = advfast.eval.evaluate_robustness(model, (x, y), eps=[2/255, 4/255, 8/255], pgd_steps=40)
    advfast.eval.write_report(result, "runs/cifar", extra={"train_seconds_per_epoch": 41.2})
"""

from advfast.eval.batches import EvalData
from advfast.eval.plots import save_robustness_plot, save_training_curves
from advfast.eval.predict import model_device, predict
from advfast.eval.published import MNIST_ANCHORS, Published, published_for
from advfast.eval.report import markdown_report, write_report
from advfast.eval.result import AttackRun, ClassReport, RobustnessResult
from advfast.eval.robustness import ATTACKS, evaluate_robustness
from advfast.eval.run_report import headline, report_run
from advfast.eval.sanity import (
    CHECKS,
    GradientMaskingWarning,
    SanityWarning,
    check_gradient_masking,
    tolerance,
)

__all__ = [
    "ATTACKS",
    "CHECKS",
    "MNIST_ANCHORS",
    "AttackRun",
    "ClassReport",
    "EvalData",
    "GradientMaskingWarning",
    "Published",
    "RobustnessResult",
    "SanityWarning",
    "check_gradient_masking",
    "evaluate_robustness",
    "headline",
    "markdown_report",
    "model_device",
    "predict",
    "published_for",
    "report_run",
    "save_robustness_plot",
    "save_training_curves",
    "tolerance",
    "write_report",
]
