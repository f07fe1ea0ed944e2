"""Loading what ``advfast train`` saved for a text data set: the fine-tuned classifier and its tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advfast.data.text import TextSplits
from advfast.runtime.checkpoint import CheckpointError, check_finite_state, load_checkpoint
from advfast.runtime.loop import checkpoint_path
from advfast.text.models import load_classifier
from advfast.text.training.config import TextTrainConfig
from advfast.text.training.trainer import CHECKPOINT, ROLE, load_text_data

REQUIRED = ("config", "model", "model_name", "model_path", "num_labels", "classes")


@dataclass
class TrainedTextClassifier:
    """A classifier fine-tuned by ``advfast train`` on text: the model (in eval mode), its tokenizer, the run's
    config and the checkpoint's record."""

    model: nn.Module
    tokenizer: Any
    config: TextTrainConfig
    record: dict[str, Any]
    path: Path

    @property
    def classes(self) -> list[str]:
        return list(self.record["classes"])

    def data(self) -> TextSplits:
        """The data set it was trained on, split as in training (the same seed)."""
        return load_text_data(self.config)


def load_text_run(run: str | Path, device: str | torch.device = "cpu") -> TrainedTextClassifier:
    """The text classifier in the run folder ``run`` (or the checkpoint file ``run``), on ``device``, in eval
    mode. It is rebuilt from the base model it was fine-tuned from (``minilm``, or the folder recorded in the
    checkpoint, which must still exist), then given the saved weights."""
    path = checkpoint_path(run, CHECKPOINT)
    record = load_checkpoint(path, map_location=device, role=ROLE, required=REQUIRED)
    try:
        config = TextTrainConfig.from_dict(record["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its run config is not readable: {exc}") from None
    check_finite_state(record["model"], path)
    source = record["model_name"] if record["model_name"] == "minilm" else record["model_path"]
    try:
        model, tokenizer = load_classifier(source, record["num_labels"], device=device)
    except (ImportError, FileNotFoundError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild its model from {source}: {exc}") from None
    try:
        model.load_state_dict(record["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: its weights do not fit {source}: {str(exc).splitlines()[0]}") from None
    model.eval()
    return TrainedTextClassifier(model, tokenizer, config, record, path)


def checkpoint_role(path: str | Path) -> str | None:
    """The role recorded in the checkpoint at ``path`` (None when it is not a readable advfast checkpoint: the
    loader of its kind then says what is wrong with it). Reads only the role, not the weights (memory-mapped)."""
    try:
        record = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # any unreadable file: the full loader reports it
        return None
    return record.get("role") if isinstance(record, dict) else None
