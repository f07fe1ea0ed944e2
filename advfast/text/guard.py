"""Leaves a caller's model as it was around an adversary or an evaluation, also when an exception escapes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def model_left_as_it_was(model: nn.Module, *, eval_mode: bool = False) -> Iterator[None]:
    """Inside: the model as it is (training adversaries) or in eval mode (``eval_mode``, the evaluations).

    After, in every case: each submodule's train/eval flag and each parameter's ``requires_grad`` as they
    were. After an exception, also each parameter's ``.grad`` as it was on entry (None stays None; an
    existing gradient, from gradient accumulation, is restored from a copy taken on entry: that copy is the
    only cost, and only for parameters that had a gradient). No hook is registered.
    """
    modes = [(m, m.training) for m in model.modules()]
    parameters = list(model.parameters())
    flags = [p.requires_grad for p in parameters]
    grads = [None if p.grad is None else p.grad.detach().clone() for p in parameters]
    if eval_mode:
        model.eval()
    try:
        yield
    except BaseException:
        for p, grad in zip(parameters, grads, strict=True):
            p.grad = grad
        raise
    finally:
        for module, training in modes:
            module.training = training
        for p, flag in zip(parameters, flags, strict=True):
            if p.requires_grad != flag:
                p.requires_grad_(flag)


def needs_autograd(what: str) -> None:
    if torch.is_inference_mode_enabled():
        raise RuntimeError(f"{what} needs autograd; call it outside torch.inference_mode()")
