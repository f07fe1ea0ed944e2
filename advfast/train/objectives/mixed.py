"""Clean plus adversarial loss (Goodfellow et al., 2015): ``min E[ l(f(x), y) ] + lam E[ l(f(x'), y) ]`` with
x' from FGSM or PGD."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advfast.attacks import fgsm, pgd, pgd_alpha_scale
from advfast.train.objectives.base import AttackSettings, BatchLoss, Objective


class Mixed(Objective):
    name = "mixed"

    def __init__(self, attack: AttackSettings, lam: float = 1.0, inner: str = "fgsm") -> None:
        super().__init__(attack)
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        if inner not in ("fgsm", "pgd"):
            raise ValueError(f'inner attack must be "fgsm" or "pgd", got {inner!r}')
        self.lam = lam
        self.inner = inner

    @classmethod
    def from_config(cls, config: Any) -> Mixed:
        return cls(AttackSettings.from_config(config), lam=config.lam, inner=config.inner)

    def compute(self, model, attacker, x, y, eps, generator) -> BatchLoss:
        a = self.attack
        common = dict(norm=a.norm, bounds=a.bounds, generator=generator, model_mode=a.model_mode)
        if self.inner == "fgsm":
            x_adv = fgsm(attacker, x, y, eps=eps, alpha=a.alpha_at(eps, 1.0), **common)
        else:
            x_adv = pgd(attacker, x, y, eps=eps, alpha=a.alpha_at(eps, pgd_alpha_scale(a.steps)), steps=a.steps,
                        **common)  # fmt: skip
        # One forward over both halves, so BatchNorm sees the clean and adversarial inputs together.
        logits = model(torch.cat([x, x_adv]))
        clean, adversarial = logits[: len(x)], logits[len(x) :]
        loss = nn.functional.cross_entropy(clean, y) + self.lam * nn.functional.cross_entropy(adversarial, y)
        return BatchLoss(loss, adversarial.detach())
