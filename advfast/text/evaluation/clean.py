"""Clean accuracy of a text classifier, with scikit-learn's classification report."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advfast.text.classifier import EmbeddingClassifier
from advfast.text.evaluation.batches import Batch, limited, total_examples
from advfast.text.guard import model_left_as_it_was


@dataclass
class CleanEvaluation:
    """``accuracy = (1/N) sum_i [argmax f(x_i) == y_i]`` over ``count`` examples; ``report``: scikit-learn's
    ``classification_report(output_dict=True)`` (precision, recall, F1, support per class, averages);
    ``report_text`` the same as text; ``predictions`` and ``labels`` [N]."""

    accuracy: float
    count: int
    report: dict
    report_text: str
    predictions: Tensor
    labels: Tensor


def clean_accuracy(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    limit: int | None = None,
    class_names: Sequence[str] | None = None,
    special_token_ids: Iterable[int] | None = None,
    progress: bool = True,
) -> CleanEvaluation:
    """Accuracy and classification report of ``model`` (run in eval mode, restored after) on ``batches``
    (dicts with ``input_ids``, ``attention_mask``, ``labels``), the first ``limit`` examples. The model runs
    on its embeddings (``inputs_embeds``), exactly as the attacks run it."""
    from sklearn.metrics import classification_report

    classifier = EmbeddingClassifier(model, special_token_ids)
    predictions, labels = [], []
    bar = tqdm(total=total_examples(batches, limit), desc="clean", unit="ex", disable=not progress, leave=False)
    with model_left_as_it_was(model, eval_mode=True), torch.no_grad():
        for raw in limited(batches, limit, classifier.device):
            batch = classifier.prepare(raw)
            logits = classifier.logits(batch, classifier.embed(batch))
            predictions.append(logits.argmax(dim=1).cpu())
            labels.append(batch.labels.cpu())
            bar.update(batch.size)
    bar.close()
    if not predictions:
        raise ValueError("batches held no examples")
    y_pred, y_true = torch.cat(predictions), torch.cat(labels)
    num_classes = classifier.num_classes or int(max(y_pred.max(), y_true.max())) + 1
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"class_names must name the {num_classes} classes, got {len(names)}")
    kwargs = {"labels": list(range(num_classes)), "target_names": names, "zero_division": 0}
    report = classification_report(y_true.numpy(), y_pred.numpy(), output_dict=True, **kwargs)
    text = classification_report(y_true.numpy(), y_pred.numpy(), digits=4, **kwargs)
    accuracy = (y_pred == y_true).double().mean().item()
    return CleanEvaluation(accuracy, len(y_true), report, text, y_pred, y_true)
