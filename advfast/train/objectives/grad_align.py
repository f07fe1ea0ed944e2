"""GradAlign (Andriushchenko & Flammarion, 2020, "Understanding and Improving Fast Adversarial Training"): FGSM
training from x itself (step eps, no random start) with a regulariser that keeps the input gradient aligned
inside the ball, the cause of catastrophic overfitting being its misalignment::

    min E[ l(f(x'), y) + lambda (1 - cos(g(x), g(x + eta))) ]
    x' = clip(x + clip(eps sign(g(x)), -eps, eps)),  g(z) = grad_z l(f(z), y),  eta ~ U[-eps, eps]^D

(x + eta clipped to the input range). As in the reference code, the cosine is differentiated through
g(x + eta) only (double backpropagation; g(x) is the FGSM gradient, held fixed), and samples with a zero
gradient at either point are left out of the mean. ``lambda`` is ``align``; the reference scales it with eps
on CIFAR-10 (0.2 at 8/255). Cost: about three forward-backward passes per batch. Double backpropagation
cannot run through DistributedDataParallel, so this objective refuses a DDP-wrapped model."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advfast import ops
from advfast.attacks import preserved_model_state
from advfast.attacks.losses import resolve_loss
from advfast.attacks.pgd import input_gradient
from advfast.checks import check_real
from advfast.train.objectives.base import AttackSettings, BatchLoss, Objective


def gradient_cosine(first: Tensor, second: Tensor) -> Tensor:
    """Mean over samples of cos(first_b, second_b) (flattened), over the samples where neither is zero; 1
    (nothing to align) when there is none."""
    a, b = first.flatten(1).float(), second.flatten(1).float()
    na, nb = a.norm(dim=1), b.norm(dim=1)
    keep = (na > 0) & (nb > 0)
    if not bool(keep.any()):
        return torch.ones((), device=first.device)
    return ((a[keep] * b[keep]).sum(dim=1) / (na[keep] * nb[keep])).mean()


class GradAlign(Objective):
    name = "grad-align"
    norms = ("linf",)

    def __init__(self, attack: AttackSettings, align: float = 0.2) -> None:
        super().__init__(attack)
        self.align = check_real("align", align, low=0.0)

    @classmethod
    def from_config(cls, config: Any) -> GradAlign:
        return cls(AttackSettings.from_config(config), align=config.align)

    def compute(self, model, attacker, x, y, eps, generator) -> BatchLoss:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            raise ValueError("grad-align needs double backpropagation, which DistributedDataParallel cannot run")
        a = self.attack
        lo, hi = a.bounds
        x = x.detach()
        with preserved_model_state(attacker, a.model_mode), torch.enable_grad():
            g_x, _ = input_gradient(attacker, resolve_loss("ce"), x, y, targeted=False, check=True)
        alpha = a.alpha_at(eps, 1.0)
        x_adv = x.clone()
        if alpha is not None:
            ops.linf_step_(x_adv, g_x, x, eps, alpha, lo, hi)
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        if self.align > 0 and eps > 0:
            x_eta = torch.empty_like(x)
            ops.random_start_(x_eta, x, eps, "linf", lo, hi, generator)
            x_eta.requires_grad_(True)
            (g_eta,) = torch.autograd.grad(F.cross_entropy(model(x_eta), y, reduction="sum"), x_eta,
                                           create_graph=True)  # fmt: skip
            loss = loss + self.align * (1.0 - gradient_cosine(g_x.detach(), g_eta))
        return BatchLoss(loss, logits.detach())
