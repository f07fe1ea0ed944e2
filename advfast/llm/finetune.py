"""What a run trains: LoRA adapters through peft (``get_peft_model``), or every weight; and the part of the
weights a checkpoint keeps (the adapters only, with LoRA)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

LORA_MARKER = "lora_"


def prepare_model(model: nn.Module, finetune: str, *, r: int = 8, alpha: int = 16) -> nn.Module:
    """``lora``: ``peft.get_peft_model`` with rank ``r`` adapters (scale ``alpha / r``, no dropout) on every
    linear layer but the output head; only the adapters train. ``full``: every parameter trains. The model is
    changed in place (peft injects its layers into it)."""
    if finetune == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if finetune != "lora":
        raise ValueError(f"finetune must be 'lora' or 'full', got {finetune!r}")
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ValueError("finetune lora needs peft: pip install peft (or use --finetune full)") from None
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear", bias="none", task_type="CAUSAL_LM"
    )
    with warnings.catch_warnings():
        # peft reads transformers' renamed is_gradient_checkpointing: their deprecation, not ours to act on.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def kept_state(state: dict[str, torch.Tensor], finetune: str) -> dict[str, torch.Tensor]:
    """The entries of a (full) state dict that a checkpoint keeps: the adapters with LoRA, all without."""
    if finetune == "lora":
        return {k: v for k, v in state.items() if LORA_MARKER in k}
    return dict(state)


def load_kept_state(model: nn.Module, state: dict[str, Any], finetune: str, path: Any) -> None:
    """Load what :func:`kept_state` kept; a key the model does not have (another model, another rank) or, with
    full fine-tuning, a missing one is an error naming ``path``."""
    from advfast.runtime.checkpoint import CheckpointError

    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise CheckpointError(f"{path}: written for another model: unexpected weights {result.unexpected_keys[:3]}")
    missing = [k for k in result.missing_keys if finetune == "full" or LORA_MARKER in k]
    if missing:
        raise CheckpointError(f"{path}: incomplete weights: missing {missing[:3]}")
