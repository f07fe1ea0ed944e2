"""The difference-of-logits-ratio losses of APGD (Croce & Hein, 2020): scale-invariant margins that do not
saturate like cross-entropy and do not reward a model for inflating its logits. ``z`` are the logits [B, C],
``z_(1) >= z_(2) >= ...`` the same logits sorted per sample; computed in float32."""

from __future__ import annotations

from torch import Tensor

DLR_TINY = 1e-12  # keeps the ratio finite when the top logits tie, as the reference code does


def dlr(logits: Tensor, y: Tensor) -> Tensor:
    """Untargeted DLR, per sample [B]; needs C >= 3::

    DLR(z, y) = -(z_y - max_{j != y} z_j) / (z_(1) - z_(3) + 1e-12)
    """
    z = logits.float()
    ascending, order = z.sort(dim=1)
    z_y = z.gather(1, y.unsqueeze(1)).squeeze(1)
    y_is_top = (order[:, -1] == y).float()
    best_other = ascending[:, -2] * y_is_top + ascending[:, -1] * (1.0 - y_is_top)
    return -(z_y - best_other) / (ascending[:, -1] - ascending[:, -3] + DLR_TINY)


def dlr_targeted(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR towards ``target`` [B], per sample [B]; needs C >= 4::

    DLR_t(z, y, t) = -(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2 + 1e-12)
    """
    z = logits.float()
    ascending = z.sort(dim=1).values
    z_y = z.gather(1, y.unsqueeze(1)).squeeze(1)
    z_t = z.gather(1, target.unsqueeze(1)).squeeze(1)
    return -(z_y - z_t) / (ascending[:, -1] - 0.5 * (ascending[:, -3] + ascending[:, -4]) + DLR_TINY)
