"""N-FGSM (de Jorge et al., 2022, "Make Some Noise"): single-step training that avoids catastrophic
overfitting with stronger noise and no projection back to the eps-ball::

    x0 = clip(x + eta, lo, hi),  eta ~ U[-k eps, k eps]   (k = ``noise``, 2 in the paper)
    x' = clip(x0 + alpha sign(grad l(x0)), lo, hi)          (alpha = eps by default)
    min E[ l(f(x'), y) ]

The training perturbation may reach (k + 1) eps: the paper finds that the noise, not the projection, is what
keeps single-step training from overfitting."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advfast import ops
from advfast.attacks import pgd
from advfast.checks import check_real
from advfast.train.objectives.base import AttackSettings, BatchLoss, Objective


class NFGSM(Objective):
    name = "n-fgsm"
    norms = ("linf",)

    def __init__(self, attack: AttackSettings, noise: float = 2.0) -> None:
        super().__init__(attack)
        self.noise = check_real("noise", noise, low=0.0)

    @classmethod
    def from_config(cls, config: Any) -> NFGSM:
        return cls(AttackSettings.from_config(config), noise=config.noise)

    def compute(self, model, attacker, x, y, eps, generator) -> BatchLoss:
        a = self.attack
        lo, hi = a.bounds
        x0 = torch.empty_like(x)
        ops.random_start_(x0, x, self.noise * eps, "linf", lo, hi, generator)
        alpha = a.alpha_at(eps, 1.0)
        # One signed step from the noisy point, bounded by alpha around it only (no projection around x).
        x_adv = pgd(attacker, x0, y, eps=alpha or 0.0, alpha=alpha, steps=1, random_start=False, bounds=a.bounds,
                    model_mode=a.model_mode)  # fmt: skip
        logits = model(x_adv)
        return BatchLoss(nn.functional.cross_entropy(logits, y), logits.detach())
