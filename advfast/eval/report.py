"""A run folder's evaluation report: ``report.json`` (every number), ``report.md`` (tables to read, beside
published numbers) and ``robustness.png`` (accuracy against eps)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from advfast.eval.formatting import percent, table_value
from advfast.eval.plots import attack_label, save_robustness_plot, save_training_curves
from advfast.eval.published import Published, check_published, published_at, published_json
from advfast.eval.result import RobustnessResult
from advfast.eval.sanity import CHECKS, tolerance
from advfast.runtime.files import atomic_write_text

__all__ = ["markdown_report", "save_robustness_plot", "save_training_curves", "write_report"]

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
ROBUSTNESS_PNG = "robustness.png"


def write_report(
    result: RobustnessResult,
    folder: str | Path,
    *,
    title: str = "Robustness evaluation",
    extra: Mapping[str, Any] | None = None,
    published: Published | None = None,
    plot: bool = True,
) -> dict[str, Path]:
    """Writes ``report.json``, ``report.md`` and (with ``plot``) ``robustness.png`` into ``folder``.

    ``report.json`` is ``{"title", "result": result.to_dict(), "extra", "published"}``; ``extra`` holds the
    caller's fields (training cost per epoch, model, data set, command line...) and must be JSON-ready;
    ``published`` (see :mod:`advfast.eval.published`) is printed beside the measured numbers. Each file is
    written to a temporary name and renamed, so a reader never sees half a report. Returns the paths by kind
    (``"json"``, ``"md"``, ``"png"``).
    """
    extra = dict(extra or {})
    checked = check_published(published)
    document = {
        "title": title,
        "result": result.to_dict(),
        "extra": extra,
        "published": published_json(checked),
    }
    try:
        text = json.dumps(document, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"extra must hold only finite JSON values (numbers, strings, lists, dicts): {exc}") from None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / REPORT_JSON, "md": folder / REPORT_MD}
    if plot:
        paths["png"] = save_robustness_plot(result, folder / ROBUSTNESS_PNG, published=checked, title=title)
    markdown = markdown_report(
        result, title=title, extra=extra, published=checked, plot=ROBUSTNESS_PNG if plot else None
    )
    atomic_write_text(paths["json"], text + "\n")
    atomic_write_text(paths["md"], markdown)
    return paths


def markdown_report(
    result: RobustnessResult,
    *,
    title: str = "Robustness evaluation",
    extra: Mapping[str, Any] | None = None,
    published: Published | None = None,
    plot: str | None = None,
) -> str:
    """The Markdown of ``report.md``: setup, accuracy per eps per attack (published numbers beside), the
    per-class table, the gradient-masking checks, the cost, and the ``extra`` fields; ``plot``: an image
    to link."""
    published = check_published(published)
    lines = [f"# {title}", "", _setup(result), ""]
    if "source" in published:
        lines += [f"Published numbers: {published['source']}.", ""]
    warnings = extra.get("warnings") if extra else None
    if warnings:
        lines += ["## Warnings", "", *(f"- **{w}**" for w in warnings), ""]
    lines += _accuracy_table(result, published)
    lines += _stages_tables(result)
    if plot:
        lines += ["", f"![accuracy against eps]({plot})"]
    lines += ["", *_per_class_table(result)]
    lines += ["", *_sanity_section(result)]
    lines += ["", *_cost_table(result)]
    if extra:
        lines += ["", "## Run", "", "| field | value |", "|---|---|"]
        lines += [f"| {key} | {table_value(value)} |" for key, value in extra.items() if key != "warnings"]
    return "\n".join(lines) + "\n"


def _setup(result: RobustnessResult) -> str:
    norm = "L∞" if result.norm == "linf" else "L2"
    lo, hi = result.bounds
    described = []
    for attack in result.attacks:
        settings = ", ".join(f"{k} {table_value(v)}" for k, v in result.settings[attack].items())
        described.append(f"{attack_label(result, attack)} ({settings})" if settings else attack_label(result, attack))
    return (
        f"{result.num_samples} samples, {result.num_classes} classes; {norm} threat model, inputs in "
        f"[{lo:g}, {hi:g}]; attacks: {'; '.join(described)}. Seed {result.seed}."
    )


def _accuracy_table(result: RobustnessResult, published: Mapping[str, Any]) -> list[str]:
    clean = percent(result.clean_accuracy) + _beside(published.get("clean"))
    lines = ["## Accuracy", "", f"Clean accuracy: **{clean}** (chance: {percent(result.chance_accuracy)}).", ""]
    headers = [attack_label(result, attack) for attack in result.attacks]
    lines += ["| ε | " + " | ".join(headers) + " |", "|---:|" + "---:|" * len(headers)]
    for i, eps in enumerate(result.eps):
        cells = [
            percent(result.accuracy[attack][i]) + _beside(published_at(published, attack, eps))
            for attack in result.attacks
        ]
        lines.append(f"| {eps:.4g} | " + " | ".join(cells) + " |")
    unmatched = [
        f"{attack} at ε = {eps:.4g}: {percent(acc)}"
        for attack, points in published.items()
        if isinstance(points, Mapping)
        for eps, acc in sorted(points.items())
        if attack not in result.accuracy or all(not math.isclose(eps, e, rel_tol=1e-6) for e in result.eps)
    ]
    if unmatched:
        lines += ["", "Published, not measured here: " + "; ".join(unmatched) + "."]
    return lines


def _stages_tables(result: RobustnessResult) -> list[str]:
    """For each ensemble: the robust accuracy after each of its stages, per eps, and each stage's seconds."""
    lines: list[str] = []
    for attack, record in result.stages.items():
        headers = ["after " + name for name in record.stages]
        lines += ["", f"### {attack_label(result, attack)}: accuracy after each stage", ""]
        lines += ["| ε | " + " | ".join(headers) + " |", "|---:|" + "---:|" * len(headers)]
        for eps, after in zip(result.eps, record.accuracy, strict=True):
            lines.append(f"| {eps:.4g} | " + " | ".join(percent(after[name]) for name in record.stages) + " |")
        spent = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in record.seconds.items())
        lines += ["", f"Seconds per stage (all ε): {spent}."]
    return lines


def _per_class_table(result: RobustnessResult) -> list[str]:
    headers = ["class"]
    for report in result.per_class:
        headers += [f"{report.name} precision", f"{report.name} recall", f"{report.name} F1"]
    headers.append("support")
    lines = ["## Per class", "", "| " + " | ".join(headers) + " |", "|---:|" + "---:|" * (len(headers) - 1)]
    for c in range(result.num_classes):
        cells = [str(c)]
        for report in result.per_class:
            cells += [f"{report.precision[c]:.3f}", f"{report.recall[c]:.3f}", f"{report.f1[c]:.3f}"]
        cells.append(str(result.per_class[0].support[c]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _sanity_section(result: RobustnessResult) -> list[str]:
    lines = ["## Gradient-masking checks", ""]
    if not result.sanity_checks:
        return [*lines, "Not run."]
    tol = tolerance(result.num_samples)
    lines += [
        f"Tolerance: {100 * tol:.2f} percentage points (half a point, or one sample if that is more).",
        "",
        "| check | result | what it asks |",
        "|---|---|---|",
    ]
    failed = {warning.check for warning in result.warnings}
    for name in result.sanity_checks:
        verdict = "**WARNING**" if name in failed else "passed"
        lines.append(f"| {name} | {verdict} | {CHECKS[name]} |")
    if result.warnings:
        lines += ["", *(f"- **{w.check}**: {w.message}" for w in result.warnings)]
    lines += [
        "",
        "| sanity run | ε | steps | restarts | random start | accuracy |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for name, run in result.sanity_runs.items():
        lines.append(
            f"| {name} | {run.eps:.4g} | {run.steps} | {run.restarts} | "
            f"{'yes' if run.random_start else 'no'} | {percent(run.accuracy)} |"
        )
    return lines


def _cost_table(result: RobustnessResult) -> list[str]:
    lines = ["## Cost", "", "| part | seconds |", "|---|---:|"]
    lines += [f"| {part} | {seconds:.2f} |" for part, seconds in result.seconds.items()]
    total = result.seconds.get("total")
    if total:
        lines += ["", f"{result.num_samples / total:.1f} samples per second over the whole evaluation."]
    return lines


def _beside(value: float | None) -> str:
    return "" if value is None else f" (published {percent(value)})"
