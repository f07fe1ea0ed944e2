"""Evaluating a trained run: the model back from its checkpoint, and the report folder's files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advfast.data import DataSplits, load_dataset
from advfast.eval import evaluate_robustness, save_training_curves, write_report
from advfast.models import build_model
from advfast.runtime.checkpoint import CheckpointError, load_checkpoint
from advfast.train.anchors import published_for
from advfast.train.config import TrainConfig


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """The model saved at ``path`` (in eval mode, on ``device``), its run's config, and the raw record."""
    record = load_checkpoint(path, map_location=device)
    config = TrainConfig.from_dict(record["config"])
    try:
        model = build_model(record["model_name"], record["num_classes"], tuple(record["input_shape"]))
        model.load_state_dict(record["model"])
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: its model ({record['model_name']}) cannot be rebuilt: {str(exc).splitlines()[0]}"
        ) from None
    return model.to(device).eval(), config, record


def report_run(
    model: nn.Module,
    data: DataSplits,
    config: TrainConfig,
    out: str | Path,
    *,
    eps: list[float],
    steps: int,
    restarts: int,
    metrics: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    progress: bool = True,
    sanity: bool = True,
) -> dict[str, Path]:
    """Robustness of ``model`` on the test split (FGSM and PGD-``steps`` with ``restarts`` at each eps, the
    gradient-masking checks, per-class metrics), written as report.json / report.md / robustness.png, plus
    training_curves.png from ``metrics``."""
    device = next(model.parameters()).device
    result = evaluate_robustness(
        model, (data.test.x, data.test.y), eps=eps, norm=config.norm, pgd_steps=steps, pgd_restarts=restarts,
        device=device, seed=config.seed, progress=progress, sanity=sanity,
    )  # fmt: skip
    out = Path(out)
    fields: dict[str, Any] = {"data": data.describe(), "config": config.to_dict()}
    if metrics:
        seconds = [m["epoch_seconds"] for m in metrics if m.get("epoch_seconds")]
        fields["train_seconds_per_epoch"] = sum(seconds) / len(seconds) if seconds else None
        fields["epochs_trained"] = len(metrics)
        save_training_curves(metrics, out / "training_curves.png", title=f"{config.method} on {data.name}")
    fields.update(extra or {})
    published = published_for(data.name, config.method, config.eps, config.norm)
    title = f"{config.method} on {data.name}, eps {config.eps:g} ({config.norm})"
    return write_report(result, out, title=title, extra=json.loads(json.dumps(fields)), published=published)


def data_for(config: TrainConfig) -> DataSplits:
    return load_dataset(config.data, subset=config.subset, seed=config.seed)
