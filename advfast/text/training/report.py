"""A text run's report, with the image reports' conventions: ``report.json`` (every number), ``report.md``
(tables to read), ``robustness.png`` (accuracy against eps and against the token budget), and
``training_curves.png`` from the per-epoch metrics."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from advfast.eval.formatting import percent, table_value
from advfast.eval.plots import save_training_curves
from advfast.eval.report import REPORT_JSON, REPORT_MD, ROBUSTNESS_PNG
from advfast.runtime.files import atomic_write, atomic_write_text
from advfast.text.training.evaluation import TextEvaluation


def write_text_report(
    result: TextEvaluation,
    folder: str | Path,
    *,
    title: str,
    extra: Mapping[str, Any] | None = None,
    metrics: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Path]:
    """Writes report.json (``{"title", "result", "extra"}``), report.md, robustness.png and, given per-epoch
    ``metrics``, training_curves.png into ``folder`` (each atomically). Returns the paths by kind."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    if metrics:
        seconds = [m["epoch_seconds"] for m in metrics if m.get("epoch_seconds")]
        extra.setdefault("train_seconds_per_epoch", sum(seconds) / len(seconds) if seconds else None)
        extra.setdefault("epochs_trained", len(metrics))
    try:
        text = json.dumps({"title": title, "result": result.to_dict(), "extra": extra}, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"extra must hold only finite JSON values: {exc}") from None
    paths: dict[str, Path] = {}
    if metrics:
        paths["curves"] = save_training_curves(metrics, folder / "training_curves.png", title=title)
    paths["png"] = save_text_robustness_plot(result, folder / ROBUSTNESS_PNG, title=title)
    paths["json"] = atomic_write_text(folder / REPORT_JSON, text + "\n")
    paths["md"] = atomic_write_text(folder / REPORT_MD, markdown_text_report(result, title=title, extra=extra))
    return paths


def headline(result: TextEvaluation) -> str:
    """One line: clean accuracy, embedding PGD at the largest eps, token substitution at the largest budget."""
    return (
        f"test ({result.count} examples): clean {percent(result.clean_accuracy)} (macro-F1 {result.macro_f1:.3f}), "
        f"embedding PGD-{result.steps} eps {result.eps[-1]:g}: {percent(result.pgd_accuracy[-1])}, "
        f"{result.budgets[-1]} token substitution(s): {percent(result.substitution_accuracy[-1])}"
    )


def markdown_text_report(result: TextEvaluation, *, title: str, extra: Mapping[str, Any] | None = None) -> str:
    norm = "L∞" if result.norm == "linf" else "L2"
    lines = [
        f"# {title}",
        "",
        f"{result.count} test examples, {result.num_classes} classes ({', '.join(result.class_names)}). "
        f"Embedding-space PGD-{result.steps}, {result.restarts} restarts, {norm} per sequence on the word "
        f"embeddings (padding and special tokens never move); token substitution: greedy first-order swaps of "
        f"whole-word tokens, {result.candidates} candidates per position checked by forward passes. "
        f"Seed {result.seed}.",
        "",
    ]
    warnings = (extra or {}).get("warnings")
    if warnings:
        lines += ["## Warnings", "", *(f"- **{w}**" for w in warnings), ""]
    chance = 1.0 / result.num_classes
    lines += [
        "## Accuracy",
        "",
        f"Clean accuracy: **{percent(result.clean_accuracy)}**, macro-F1 {result.macro_f1:.3f} "
        f"(chance: {percent(chance)}).",
        "",
        f"| ε ({norm}) | embedding PGD-{result.steps} x{result.restarts} |",
        "|---:|---:|",
        *(f"| {e:.4g} | {percent(a)} |" for e, a in zip(result.eps, result.pgd_accuracy, strict=True)),
        "",
        "| tokens changed (at most) | token substitution |",
        "|---:|---:|",
        *(f"| {k} | {percent(a)} |" for k, a in zip(result.budgets, result.substitution_accuracy, strict=True)),
        "",
        f"Mean substitutions among the examples fooled: {result.mean_substitutions:.2f}.",
        "",
        f"![accuracy against eps and token budget]({ROBUSTNESS_PNG})",
        "",
        "## Classification report (clean)",
        "",
        "```",
        result.classification_report_text.rstrip(),
        "```",
        "",
        "## Cost",
        "",
        "| part | seconds |",
        "|---|---:|",
        *(f"| {part} | {seconds:.2f} |" for part, seconds in result.seconds.items()),
    ]
    if extra:
        lines += ["", "## Run", "", "| field | value |", "|---|---|"]
        lines += [f"| {key} | {table_value(value)} |" for key, value in extra.items() if key != "warnings"]
    return "\n".join(lines) + "\n"


def save_text_robustness_plot(result: TextEvaluation, path: str | Path, *, title: str | None = None) -> Path:
    """Two panels: accuracy against eps (embedding PGD), and against the token budget (substitution), each
    with the clean accuracy and chance (1/C) as horizontal lines."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    figure = Figure(figsize=(9.6, 4.0), layout="constrained")
    left, right = figure.subplots(1, 2)
    panels = (
        (left, [0.0, *result.eps], [result.clean_accuracy, *result.pgd_accuracy], f"ε ({result.norm})",
         f"embedding PGD-{result.steps} x{result.restarts}"),
        (right, [0, *result.budgets], [result.clean_accuracy, *result.substitution_accuracy],
         "tokens changed (at most)", "token substitution"),
    )  # fmt: skip
    for ax, xs, ys, xlabel, label in panels:
        ax.axhline(result.clean_accuracy, color="black", linewidth=1.2, label="clean")
        ax.axhline(1.0 / result.num_classes, color="gray", linestyle=":", linewidth=1.0, label="chance (1/C)")
        ax.plot(xs, ys, marker="o", label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle(title or f"Accuracy under attack ({result.count} examples)")
    return atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=120))
