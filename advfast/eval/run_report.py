"""The report of a trained run: robustness on its test split written into the run folder, beside the training
curves and the published numbers for the same recipe."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from advfast.data import DataSplits
from advfast.eval.plots import save_training_curves
from advfast.eval.predict import model_device
from advfast.eval.report import write_report
from advfast.eval.robustness import evaluate_robustness

PROGRESS_FILE = "progress.pt"


def report_run(
    model: nn.Module,
    data: DataSplits,
    out: str | Path,
    *,
    title: str,
    eps: Sequence[float],
    norm: str,
    steps: int,
    restarts: int,
    attacks: Sequence[str] = ("fgsm", "pgd"),
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int = 256,
    limit: int = 0,
    seed: int = 0,
    published: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    metrics: Sequence[Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
    progress: bool = True,
    sanity: bool = True,
    resumable: bool = True,
    say: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Robustness of ``model`` on ``data.test`` (the registry's ``attacks`` at each eps, PGD with ``steps``
    and ``restarts``, the others with their defaults updated by ``settings``; the gradient-masking checks,
    per-class metrics), written as report.json / report.md / robustness.png in
    ``out``, plus training_curves.png from ``metrics``; ``published`` numbers (see
    :func:`advfast.eval.published_for`) are printed beside. ``limit`` > 0 evaluates the first ``limit`` test
    samples only (a quick look). With ``resumable``, the evaluation's progress is kept in ``out/progress.pt``
    after every batch, and the same call after a kill resumes from it (:mod:`advfast.eval.progress`); the file
    is removed once the report is written. ``say`` receives the report's headline and a resumption's notice.
    Returns the paths written, by kind."""
    end = limit or None
    out = Path(out)
    checkpoint = out / PROGRESS_FILE if resumable else None
    if checkpoint is not None and checkpoint.exists():
        say(f"resuming the evaluation kept in {checkpoint}")
    result = evaluate_robustness(
        model, (data.test.x[:end], data.test.y[:end]), eps=list(eps), norm=norm, attacks=list(attacks),
        settings=settings, pgd_steps=steps, pgd_restarts=restarts, batch_size=batch_size,
        device=model_device(model), seed=seed, progress=progress, sanity=sanity, checkpoint=checkpoint,
    )  # fmt: skip
    fields: dict[str, Any] = {"data": data.describe()}
    if config is not None:
        fields["config"] = dict(config)
    paths: dict[str, Path] = {}
    if metrics:
        seconds = [m["epoch_seconds"] for m in metrics if m.get("epoch_seconds")]
        fields["train_seconds_per_epoch"] = sum(seconds) / len(seconds) if seconds else None
        fields["epochs_trained"] = len(metrics)
        paths["curves"] = save_training_curves(metrics, out / "training_curves.png", title=title)
    fields.update(extra or {})
    paths.update(write_report(result, out, title=title, extra=json.loads(json.dumps(fields)), published=published))
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)  # the report holds the result now
    say(headline(result))
    return paths


def headline(result: Any) -> str:
    """One line: clean accuracy, then each attack's accuracy at the largest eps, and the checks' verdict."""
    parts = [f"clean {result.clean_accuracy:.1%}"]
    largest = result.eps[-1]
    for attack, accuracies in result.accuracy.items():
        parts.append(f"{attack} {accuracies[-1]:.1%}")
    for attack, record in result.stages.items():
        after = record.accuracy[-1]
        parts.append(f"{attack} stages " + " > ".join(f"{name} {after[name]:.1%}" for name in record.stages))
    checks = (
        f"{len(result.warnings)} gradient-masking warning(s)"
        if result.warnings
        else ("gradient-masking checks passed" if result.sanity_checks else "no sanity checks")
    )
    return f"test ({result.num_samples} samples, eps {largest:g}): " + ", ".join(parts) + f"; {checks}"
