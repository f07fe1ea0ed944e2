"""Loading what ``advfast train`` saved: the trained classifier, ready to evaluate or attack."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advfast.data import DataSplits, load_dataset
from advfast.models import build_model
from advfast.runtime.checkpoint import CheckpointError, check_finite_state, load_checkpoint
from advfast.runtime.loop import checkpoint_path
from advfast.train.config import TrainConfig
from advfast.train.trainer import CHECKPOINT

REQUIRED = ("config", "model", "model_name", "num_classes", "input_shape")


@dataclass
class TrainedClassifier:
    """A classifier trained by ``advfast train``: the model (in eval mode), the config of its run, and the
    checkpoint's record (metrics, data description, ...)."""

    model: nn.Module
    config: TrainConfig
    record: dict[str, Any]
    path: Path

    def data(self) -> DataSplits:
        """The data set it was trained on, split as in training (the same seed and subset)."""
        return load_dataset(self.config.data, subset=self.config.subset, seed=self.config.seed)


def load_classifier(run: str | Path, device: str | torch.device = "cpu") -> TrainedClassifier:
    """The classifier saved by ``advfast train`` in the run folder ``run`` (or the checkpoint file ``run``),
    on ``device``, in eval mode::

        trained = advfast.train.load_classifier("runs/mnist-pgd")
        logits = trained.model(x)

    A generator checkpoint, a JSON file, a corrupt or truncated file, or weights holding NaN give a
    :class:`~advfast.runtime.CheckpointError` that says so."""
    path = checkpoint_path(run, CHECKPOINT)
    record = load_checkpoint(path, map_location=device, role="classifier", required=REQUIRED)
    try:
        config = TrainConfig.from_dict(record["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its run config is not readable: {exc}") from None
    check_finite_state(record["model"], path)
    try:
        model = build_model(record["model_name"], record["num_classes"], tuple(record["input_shape"]))
        model.load_state_dict(record["model"])
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: its model ({record['model_name']}) cannot be rebuilt: {str(exc).splitlines()[0]}"
        ) from None
    return TrainedClassifier(model.to(device).eval(), config, record, path)
