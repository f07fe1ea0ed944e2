"""Fast adversarial training (Wong et al., 2020): FGSM from a uniform random start with step 1.25 eps,
``min E[ l(f(x'), y) ]``, ``x' = clip(x + clip(d0 + 1.25 eps sign(grad l(x + d0)), -eps, eps))``.

``start``: ``"ball"`` (the default) takes the gradient at ``x + d0`` itself, as Wong et al.'s code does;
``"clipped"`` clips ``x + d0`` to the input range first. On MNIST, whose pixels sit at 0 or 1, clipping removes
about half of the start's noise there, and it costs a lot: the same recipe gave 71.3% under AutoAttack with
the clipped start and 83.7% / 79.9% / 84.1% (three seeds) with the whole ball (first 1,000 test images,
README). Either way ``x'`` is in the ball and the range.

Single-step training can suddenly lose all robustness to PGD ("catastrophic overfitting"); the trainer's
overfitting guard (on by default for this method) watches PGD accuracy on validation data and stops, keeping
the last good weights, when it collapses (the early stopping of Wong et al.)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from advfast import ops
from advfast.attacks import FGSM_RS_SCALE, fgsm, preserved_model_state
from advfast.attacks.losses import resolve_loss
from advfast.attacks.pgd import input_gradient
from advfast.checks import check_choice
from advfast.train.objectives.base import AttackSettings, BatchLoss, Objective

STARTS = ("clipped", "ball")


class FGSMRS(Objective):
    name = "fgsm-rs"

    def __init__(self, attack: AttackSettings, start: str = "ball") -> None:
        super().__init__(attack)
        self.start = check_choice("start", start, STARTS)

    @classmethod
    def from_config(cls, config: Any) -> FGSMRS:
        return cls(AttackSettings.from_config(config), start=config.start)

    def compute(self, model, attacker, x, y, eps, generator) -> BatchLoss:
        a = self.attack
        alpha = a.alpha_at(eps, FGSM_RS_SCALE)
        if self.start == "ball" and alpha is not None:
            x_adv = self._from_the_whole_ball(attacker, x, y, eps, alpha, generator)
        else:
            x_adv = fgsm(attacker, x, y, eps=eps, alpha=alpha, random_start=True, norm=a.norm, bounds=a.bounds,
                         generator=generator, model_mode=a.model_mode)  # fmt: skip
        logits = model(x_adv)
        return BatchLoss(nn.functional.cross_entropy(logits, y), logits.detach())

    def _from_the_whole_ball(self, attacker, x, y, eps, alpha, generator) -> torch.Tensor:
        a = self.attack
        lo, hi = a.bounds
        x_adv = torch.empty_like(x)
        ops.random_start_(x_adv, x, eps, a.norm, -math.inf, math.inf, generator)  # not clipped to the range
        with preserved_model_state(attacker, a.model_mode), torch.enable_grad():
            grad, _ = input_gradient(attacker, resolve_loss("ce"), x_adv, y, targeted=False, check=True)
        step = ops.linf_step_ if a.norm == "linf" else ops.l2_step_
        return step(x_adv, grad, x.detach(), eps, alpha, lo, hi)  # into the ball around x and the range
