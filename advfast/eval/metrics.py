"""Accuracy and per-class metrics of predictions against labels (scikit-learn, imported when first used)."""

from __future__ import annotations

from torch import Tensor

from advfast.eval.result import ClassReport


def accuracy(predictions: Tensor, labels: Tensor) -> float:
    """``(1/N) * sum_i [pred_i == y_i]``."""
    return (predictions == labels).double().mean().item()


def class_report(name: str, labels: Tensor, predictions: Tensor, num_classes: int) -> ClassReport:
    """Precision, recall, F1 and support for every class ``0..C-1`` (0 where a ratio is 0/0), and the
    confusion matrix, from scikit-learn's ``precision_recall_fscore_support`` and ``confusion_matrix``."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    classes = list(range(num_classes))
    y_true, y_pred = labels.cpu().numpy(), predictions.cpu().numpy()
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    return ClassReport(
        name=name,
        precision=[float(v) for v in precision],
        recall=[float(v) for v in recall],
        f1=[float(v) for v in f1],
        support=[int(v) for v in support],
        confusion=confusion_matrix(y_true, y_pred, labels=classes).tolist(),
    )
