"""The fast gradient sign method (Goodfellow et al., 2015) and its random-start variant (FGSM-RS, Wong et al.,
2020): one step of :func:`advfast.pgd`."""

from __future__ import annotations

import torch
from torch import Tensor

from advfast.attacks.losses import LossFn
from advfast.attacks.model_state import ModelMode
from advfast.attacks.pgd import Model, attack
from advfast.attacks.step_size import FGSM_RS_SCALE
from advfast.attacks.validation import PerSample


def fgsm(
    model: Model,
    x: Tensor,
    y: Tensor,
    *,
    eps: PerSample,
    alpha: PerSample | None = None,
    norm: str = "linf",
    random_start: bool = False,
    loss: str | LossFn = "ce",
    targeted: bool = False,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
    model_mode: ModelMode = "eval",
) -> Tensor:
    """One projected gradient step from x0 = x, or from a uniform random point x0 of the eps-ball (FGSM-RS)::

        linf: x_adv = clip(x + clip(x0 + alpha * sign(g) - x, -eps, eps), lo, hi),  g = grad of the loss at x0

    with alpha = eps by default, and alpha = 1.25 * eps with random_start (Wong et al.).

    ``norm="l2"`` gives the fast gradient method (a normalised-gradient step). Arguments as in
    :func:`advfast.pgd`; returns x_adv [B, ...], detached.
    """
    return attack(
        model,
        x,
        y,
        eps=eps,
        alpha=alpha,
        default_alpha_scale=FGSM_RS_SCALE if random_start else 1.0,
        steps=1,
        norm=norm,
        random_start=random_start,
        loss=loss,
        targeted=targeted,
        restarts=1,
        early_stop=False,
        bounds=bounds,
        generator=generator,
        model_mode=model_mode,
    )
