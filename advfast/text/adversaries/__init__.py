"""Embedding-space adversaries for fine-tuning transformer classifiers, by name. Adding one is adding a file
and a line here."""

from __future__ import annotations

from torch import nn

from advfast.text.adversaries.base import Adversary
from advfast.text.adversaries.fgm import FGM
from advfast.text.adversaries.freelb import FreeLB
from advfast.text.adversaries.pgd import PGD
from advfast.text.adversaries.r3f import R3F
from advfast.text.adversaries.smart import SMART

ADVERSARIES: dict[str, type[Adversary]] = {cls.name: cls for cls in (FGM, PGD, FreeLB, SMART, R3F)}


def make_adversary(method: str, model: nn.Module, **kwargs) -> Adversary:
    """The adversary called ``method`` (one of ``ADVERSARIES``) on ``model``, with its keyword arguments."""
    if method not in ADVERSARIES:
        raise ValueError(f"method must be one of {sorted(ADVERSARIES)}, got {method!r}")
    return ADVERSARIES[method](model, **kwargs)


__all__ = ["ADVERSARIES", "FGM", "PGD", "R3F", "SMART", "Adversary", "FreeLB", "make_adversary"]
