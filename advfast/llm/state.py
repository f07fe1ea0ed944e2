"""An attack's forward and backward passes leave the caller's model as they found it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from advfast.attacks.model_state import preserved_model_state


@contextmanager
def frozen_for_attack(model: nn.Module, *, freeze: bool = True) -> Iterator[None]:
    """Inside: the model in eval mode (no dropout) and, with ``freeze``, every parameter's ``requires_grad``
    off, so a backward pass computes input gradients only (autograd then neither computes nor stores weight
    gradients; the attack takes them with ``torch.autograd.grad``, so no ``.grad`` is ever written). After,
    even on an exception: every module's train/eval flag and every parameter's ``requires_grad`` as they were.
    ``freeze=False`` leaves the flags alone (FSDP's sharded parameters must keep theirs)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    with preserved_model_state(model, "eval"):
        try:
            if freeze:
                for p, _ in flags:
                    p.requires_grad_(False)
            yield
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
