"""TRADES (Zhang et al., 2019): ``min E[ l(f(x), y) + beta KL(f(x) || f(x')) ]`` with
``x' = argmax_{||x' - x|| <= eps} KL(f(x) || f(x'))`` by PGD-K from a random point of the ball (the paper
starts at x + 0.001 N(0, I); at x itself the KL gradient is zero)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from advfast.attacks import pgd, pgd_alpha_scale, preserved_model_state
from advfast.train.objectives.base import AttackSettings, BatchLoss, Objective


class TRADES(Objective):
    name = "trades"

    def __init__(self, attack: AttackSettings, beta: float = 6.0) -> None:
        super().__init__(attack)
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.beta = beta

    @classmethod
    def from_config(cls, config: Any) -> TRADES:
        return cls(AttackSettings.from_config(config), beta=config.beta)

    def compute(self, model, attacker, x, y, eps, generator) -> BatchLoss:
        a = self.attack
        # The KL target comes from the same mode the attack runs in (eval by default, as in the paper).
        with torch.no_grad(), preserved_model_state(attacker, a.model_mode):
            clean_log_probs = F.log_softmax(attacker(x).float(), dim=1)

        def kl_to_clean(logits: Tensor, _: Tensor) -> Tensor:
            log_probs = F.log_softmax(logits.float(), dim=1)
            return F.kl_div(log_probs, clean_log_probs, reduction="none", log_target=True).sum(dim=1)

        alpha = a.alpha_at(eps, pgd_alpha_scale(a.steps))
        x_adv = pgd(
            attacker,
            x,
            y,
            eps=eps,
            alpha=alpha,
            steps=a.steps,
            norm=a.norm,
            loss=kl_to_clean,
            bounds=a.bounds,
            generator=generator,
            model_mode=a.model_mode,
        )
        logits = model(torch.cat([x, x_adv]))
        clean, adversarial = logits[: len(x)], logits[len(x) :]
        robust = F.kl_div(
            F.log_softmax(adversarial.float(), dim=1),
            F.log_softmax(clean.float(), dim=1),
            reduction="batchmean",
            log_target=True,
        )
        return BatchLoss(F.cross_entropy(clean, y) + self.beta * robust, adversarial.detach())
