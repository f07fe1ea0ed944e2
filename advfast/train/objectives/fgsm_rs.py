"""Fast adversarial training (Wong et al., 2020): FGSM from a uniform random start with step 1.25 eps,
``min E[ l(f(x'), y) ]``, ``x' = clip(x + clip(d0 + 1.25 eps sign(grad l(x + d0)), -eps, eps))``.

Single-step training can suddenly lose all robustness to PGD ("catastrophic overfitting"); the trainer's
overfitting guard (on by default for this method) watches PGD accuracy on validation data and stops, keeping
the last good weights, when it collapses (the early stopping of Wong et al.)."""

from __future__ import annotations

from torch import nn

from advfast.attacks import FGSM_RS_SCALE, fgsm
from advfast.train.objectives.base import BatchLoss, Objective


class FGSMRS(Objective):
    name = "fgsm-rs"

    def compute(self, model, attacker, x, y, eps, generator) -> BatchLoss:
        a = self.attack
        x_adv = fgsm(
            attacker,
            x,
            y,
            eps=eps,
            alpha=a.alpha_at(eps, FGSM_RS_SCALE),
            random_start=True,
            norm=a.norm,
            bounds=a.bounds,
            generator=generator,
            model_mode=a.model_mode,
        )
        logits = model(x_adv)
        return BatchLoss(nn.functional.cross_entropy(logits, y), logits.detach())
