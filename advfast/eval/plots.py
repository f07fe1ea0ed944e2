"""PNG figures: robust accuracy against eps, and training curves. matplotlib is imported when first used, and
figures are drawn on the Agg canvas of a bare ``Figure`` (no pyplot, no display, no global backend change)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advfast.eval.attacks import get_attack
from advfast.eval.published import Published, check_published, published_points
from advfast.runtime.files import atomic_write

if TYPE_CHECKING:
    from advfast.eval.result import RobustnessResult


def attack_label(result: RobustnessResult, attack: str) -> str:
    """The registry's label of ``attack`` with the settings it ran with: "FGSM", "PGD-40 x5", "AutoAttack"."""
    return get_attack(attack).label(result.settings[attack])


def save_robustness_plot(
    result: RobustnessResult,
    path: str | Path,
    *,
    published: Published | None = None,
    title: str | None = None,
) -> Path:
    """Accuracy against eps: one line per attack, the clean accuracy and chance (1/C) as horizontal lines,
    and the ``published`` reference numbers (see :mod:`advfast.eval.published`) as hollow markers in the
    colour of their attack. Returns the path of the PNG written."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    published = check_published(published)
    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = figure.add_subplot()
    clean = ax.axhline(result.clean_accuracy, color="black", linewidth=1.2, label="clean")
    ax.axhline(result.chance_accuracy, color="gray", linestyle=":", linewidth=1.0, label="chance (1/C)")
    for attack, accuracies in result.accuracy.items():
        (line,) = ax.plot(result.eps, accuracies, marker="o", label=attack_label(result, attack))
        points = published_points(published, attack)
        if points:
            eps, values = zip(*points, strict=True)
            ax.plot(
                eps,
                values,
                linestyle="none",
                marker="s",
                markerfacecolor="none",
                color=line.get_color(),
                label=f"{get_attack(attack).label(get_attack(attack).defaults)} (published)",
            )
    if "clean" in published:
        ax.plot(
            [0.0],
            [published["clean"]],
            linestyle="none",
            marker="s",
            markerfacecolor="none",
            color=clean.get_color(),
            label="clean (published)",
        )
    norm = "L∞" if result.norm == "linf" else "L2"
    ax.set_xlabel(f"ε ({norm})")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.grid(alpha=0.3)
    ax.set_title(title or f"Accuracy against ε ({result.num_samples} samples)")
    ax.legend(loc="best", fontsize="small")
    return _save(figure, path)


COUNTERS = ("step", "epoch", "batch")


def save_training_curves(
    metrics: Sequence[Mapping[str, Any]] | str | Path, path: str | Path, *, title: str | None = None
) -> Path:
    """Every numeric series in ``metrics`` against the epoch: records such as ``{"epoch": 1, "train_loss":
    0.9, "train_acc": 0.7, "val_clean_acc": 0.8, "val_robust_acc": 0.4}``, as a list or a JSON-lines file
    (``metrics.jsonl``). The x axis is ``epoch``, else ``step``, else the record's position (from 1); a series
    may skip records. Losses (names with "loss") share a panel, accuracies (names with "acc") another, and every
    other series but counters (step) gets its own.
    Returns the path of the PNG written."""
    from matplotlib.figure import Figure

    records = _records(metrics)
    x_key = next((key for key in ("epoch", "step") if any(key in record for record in records)), None)
    series: dict[str, tuple[list[float], list[float]]] = {}
    for position, record in enumerate(records, start=1):
        x = record.get(x_key, position) if x_key else position
        if not _is_number(x):
            continue
        for key, value in record.items():
            if key != x_key and _is_number(value):
                xs, ys = series.setdefault(key, ([], []))
                xs.append(float(x))
                ys.append(float(value))
    if not series:
        raise ValueError("metrics holds no numeric series to plot")
    panels = {
        "loss": [key for key in series if "loss" in key],
        "accuracy": [key for key in series if "acc" in key and "loss" not in key],
    }
    # Every other series on its own axis (learning rate, eps, seconds...: their scales differ by orders of
    # magnitude); counters such as the step number are not worth a panel.
    for key in series:
        if key not in panels["loss"] + panels["accuracy"] and key not in COUNTERS:
            panels[key] = [key]
    panels = {name: keys for name, keys in panels.items() if keys}
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(4.5 * columns, 3.4 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax, (name, keys) in zip(axes, panels.items(), strict=False):
        for key in keys:
            xs, ys = series[key]
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=key)
        ax.set_xlabel(x_key or "record")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(loc="best", fontsize="small")
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def _records(metrics: Sequence[Mapping[str, Any]] | str | Path) -> list[Mapping[str, Any]]:
    if isinstance(metrics, str | Path):
        lines = Path(metrics).read_text().splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
    else:
        records = list(metrics)
    if not records:
        raise ValueError("metrics is empty: no records to plot")
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ValueError(f"metrics must hold dict records; record {index} is a {type(record).__name__}")
    return records


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _save(figure: Any, path: str | Path) -> Path:
    return atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=120))
