"""Predicted classes of a model over many samples, in batches, leaving the model as it was."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import Tensor, nn

from advfast.attacks import preserved_model_state

Model = Callable[[Tensor], Tensor]


def model_device(model: Model) -> torch.device:
    """Where the model's parameters (or buffers) are; the CPU for a model without any."""
    if isinstance(model, nn.Module):
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            return tensor.device
    return torch.device("cpu")


def predict(model: Model, x: Tensor, *, batch_size: int = 1000) -> Tensor:
    """``argmax_c model(x)_c`` for every sample of ``x`` [N, ...], as int64 [N] on the CPU: in eval mode, without
    gradients, ``batch_size`` samples at a time on the model's device."""
    device = model_device(model)
    out = torch.empty(len(x), dtype=torch.int64)
    with preserved_model_state(model, "eval"), torch.no_grad():
        for start in range(0, len(x), batch_size):
            out[start : start + batch_size] = model(x[start : start + batch_size].to(device)).argmax(dim=1).cpu()
    return out
