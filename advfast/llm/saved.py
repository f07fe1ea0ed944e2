"""A trained LLM run, loaded back: the base model with the run's weights (adapters merged in)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from advfast.llm.config import LLMTrainConfig
from advfast.llm.finetune import load_kept_state, prepare_model
from advfast.llm.models import load_model
from advfast.runtime.checkpoint import check_finite_state, load_checkpoint
from advfast.runtime.loop import checkpoint_path


@dataclass
class TrainedLLM:
    model: nn.Module  # in eval mode; LoRA adapters merged into the weights
    tokenizer: Any
    config: LLMTrainConfig
    record: dict[str, Any]
    path: Path


def load_trained(run: str | Path, *, device: Any = "cpu", model: nn.Module | None = None, tokenizer: Any = None):
    """The model a run of ``advfast llm-train`` trained (``run``: its folder or its last.pt). ``model`` /
    ``tokenizer``: the base model, when the registry cannot load the one the run recorded."""
    path = checkpoint_path(run, "last.pt")
    record = load_checkpoint(path, role="llm", required=("config", "finetune", "weights", "references"))
    config = LLMTrainConfig.from_dict(record["config"])
    if model is None:
        model, tokenizer = load_model(config.model, dtype=config.dtype, device=device)
    check_finite_state(record["weights"], path)
    lora = record.get("lora", {"r": config.lora_r, "alpha": config.lora_alpha})
    wrapped = prepare_model(model, record["finetune"], r=lora["r"], alpha=lora["alpha"])
    load_kept_state(wrapped, record["weights"], record["finetune"], path)
    if record["finetune"] == "lora":
        wrapped = wrapped.merge_and_unload()
    for p in wrapped.parameters():
        p.requires_grad_(False)
    return TrainedLLM(wrapped.eval(), tokenizer, config, record, path)
