"""Runs an attack's forward passes without leaving a trace on the caller's model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

ModelMode = Literal["eval", "as_is"]
MODEL_MODES = ("eval", "as_is")


@contextmanager
def preserved_model_state(model: object, mode: ModelMode = "eval") -> Iterator[None]:
    """Inside: the model in eval mode (``mode="eval"``) or in whatever mode it is (``"as_is"``, as adversarial
    training wants for its BatchNorm batch statistics). After, even on an exception: every submodule's
    train/eval flag as it was and, in ``"as_is"`` mode, every buffer (BatchNorm running statistics) restored.
    Gradients are taken w.r.t. the input only, so parameters' ``.grad`` are never touched; no hooks are added.
    """
    if mode not in MODEL_MODES:
        raise ValueError(f"model_mode must be one of {MODEL_MODES}, got {mode!r}")
    if not isinstance(model, nn.Module):
        yield
        return
    training = [(m, m.training) for m in model.modules()]
    saved_buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
    if mode == "eval":
        model.eval()
    else:
        saved_buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        for module, was_training in training:
            module.training = was_training
        with torch.no_grad():
            for buffer, saved in saved_buffers:
                buffer.copy_(saved)
