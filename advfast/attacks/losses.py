"""Per-sample attack losses: ``loss(logits [B, C], y [B]) -> [B]``. The attack ascends the loss of the true
label (untargeted) or descends the loss of the target label (targeted)."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

LossFn = Callable[[Tensor, Tensor], Tensor]


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """``-log softmax(logits)_y`` per sample, computed in float32 whatever the logits' dtype."""
    return F.cross_entropy(logits.float(), y, reduction="none")


def cw_margin(logits: Tensor, y: Tensor) -> Tensor:
    """Carlini-Wagner margin ``max_{j != y} z_j - z_y`` per sample: positive exactly when y is not the top
    class, and not saturating like cross-entropy once the sample is misclassified."""
    z = logits.float()
    z_y = z.gather(1, y.unsqueeze(1)).squeeze(1)
    others = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), float("-inf"))
    return others.amax(dim=1) - z_y


LOSSES: dict[str, LossFn] = {"ce": cross_entropy, "cw": cw_margin}


def resolve_loss(loss: str | LossFn) -> LossFn:
    """A loss by name ("ce", "cw") or the callable itself."""
    if callable(loss):
        return loss
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]
    raise ValueError(f"loss must be one of {sorted(LOSSES)} or a callable (logits, y) -> [B] loss, got {loss!r}")
