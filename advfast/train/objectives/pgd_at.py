"""PGD adversarial training (Madry et al., 2018): ``min E[ max_{||d|| <= eps} l(f(x + d), y) ]``, the inner
maximisation by PGD-K from a random start."""

from __future__ import annotations

from torch import nn

from advfast.attacks import pgd, pgd_alpha_scale
from advfast.train.objectives.base import BatchLoss, Objective


class PGDAT(Objective):
    name = "pgd"

    def compute(self, model, attacker, x, y, eps, generator) -> BatchLoss:
        a = self.attack
        x_adv = pgd(
            attacker,
            x,
            y,
            eps=eps,
            alpha=a.alpha_at(eps, pgd_alpha_scale(a.steps)),
            steps=a.steps,
            norm=a.norm,
            bounds=a.bounds,
            generator=generator,
            model_mode=a.model_mode,
        )
        logits = model(x_adv)
        return BatchLoss(nn.functional.cross_entropy(logits, y), logits.detach())
