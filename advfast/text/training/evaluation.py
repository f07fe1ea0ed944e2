"""The test report's numbers for a text classifier: clean accuracy with scikit-learn's classification report,
accuracy under embedding-space PGD at each radius, and under token substitution at each budget."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from advfast.data.text import TextExamples, text_loader
from advfast.text.evaluation import clean_accuracy, embedding_pgd_accuracy, token_substitution_accuracy

# Where a resumable evaluation keeps each attack's progress (see advfast.eval.progress), in its report folder.
PROGRESS_FILES = {"embedding_pgd": "progress-embedding-pgd.pt", "token_substitution": "progress-token-substitution.pt"}


@dataclass
class TextEvaluation:
    """What :func:`evaluate_text_classifier` measured on ``count`` test examples (JSON-ready fields):
    ``clean_accuracy`` and ``classification_report`` (scikit-learn's dict: precision, recall, F1 and support
    per class, macro and weighted averages); ``pgd_accuracy[i]`` at ``eps[i]`` (PGD-``steps``, ``restarts``
    restarts, ``norm``); ``substitution_accuracy[i]`` after up to ``budgets[i]`` token swaps (``candidates``
    per position and round); ``seconds`` per part."""

    count: int
    num_classes: int
    class_names: list[str]
    clean_accuracy: float
    macro_f1: float
    classification_report: dict[str, Any]
    classification_report_text: str
    eps: list[float]
    norm: str
    steps: int
    restarts: int
    pgd_accuracy: list[float]
    budgets: list[int]
    candidates: int
    substitution_accuracy: list[float]
    mean_substitutions: float
    seed: int
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_text_classifier(
    model: nn.Module,
    tokenizer: Any,
    test: TextExamples,
    *,
    class_names: Sequence[str],
    eps: Sequence[float],
    budgets: Sequence[int],
    norm: str = "l2",
    steps: int = 20,
    restarts: int = 5,
    candidates: int = 8,
    batch_size: int = 32,
    max_length: int = 128,
    limit: int = 0,
    seed: int = 0,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
) -> TextEvaluation:
    """``model`` (left as it was) on the first ``limit`` examples of ``test`` (0: all), tokenized by
    ``tokenizer`` in batches of ``batch_size`` padded to their longest (at most ``max_length`` tokens).
    With ``checkpoint_dir``, each attack keeps its progress there after every batch (:data:`PROGRESS_FILES`)
    and the same call after a kill resumes from it (``seconds`` then count this call's time only);
    :func:`remove_progress` deletes the files once the result is safely written."""
    files = {part: None if checkpoint_dir is None else Path(checkpoint_dir) / name
             for part, name in PROGRESS_FILES.items()}  # fmt: skip
    loader = text_loader(test, tokenizer, batch_size=batch_size, max_length=max_length)
    specials = getattr(tokenizer, "all_special_ids", None)
    end = limit or None
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    clean = clean_accuracy(
        model, loader, limit=end, class_names=list(class_names), special_token_ids=specials, progress=progress
    )
    seconds["clean"] = time.perf_counter() - started
    mark = time.perf_counter()
    pgd = embedding_pgd_accuracy(
        model, loader, eps=list(eps), steps=steps, restarts=restarts, norm=norm, limit=end,
        special_token_ids=specials, seed=seed, progress=progress, checkpoint=files["embedding_pgd"],
    )  # fmt: skip
    seconds["embedding_pgd"] = time.perf_counter() - mark
    mark = time.perf_counter()
    swaps = token_substitution_accuracy(
        model,
        loader,
        budgets=list(budgets),
        candidates=candidates,
        tokenizer=tokenizer,
        limit=end,
        progress=progress,
        checkpoint=files["token_substitution"],
    )
    seconds["token_substitution"] = time.perf_counter() - mark
    seconds["total"] = time.perf_counter() - started
    return TextEvaluation(
        count=clean.count, num_classes=len(class_names), class_names=list(class_names),
        clean_accuracy=clean.accuracy, macro_f1=float(clean.report["macro avg"]["f1-score"]),
        classification_report=clean.report, classification_report_text=clean.report_text,
        eps=list(pgd.eps), norm=norm, steps=steps, restarts=restarts, pgd_accuracy=list(pgd.accuracy),
        budgets=list(swaps.budgets), candidates=candidates, substitution_accuracy=list(swaps.accuracy),
        mean_substitutions=swaps.mean_substitutions, seed=seed, seconds=seconds,
    )  # fmt: skip


def remove_progress(checkpoint_dir: str | Path) -> None:
    """Deletes the progress files of :func:`evaluate_text_classifier` in ``checkpoint_dir``."""
    for name in PROGRESS_FILES.values():
        (Path(checkpoint_dir) / name).unlink(missing_ok=True)
