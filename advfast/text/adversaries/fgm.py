"""FGM: the fast gradient method on word embeddings (Miyato, Dai & Goodfellow, "Adversarial Training Methods
for Semi-Supervised Text Classification", ICLR 2017)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advfast.text.adversaries.base import Adversary, Trace, _Backward
from advfast.text.batch import TextBatch
from advfast.text.losses import cross_entropy
from advfast.text.perturbation import l2_step_, sign_step_
from advfast.text.validation import check_choice, check_scalar


class FGM(Adversary):
    """One step of length ``eps`` along the clean loss's gradient, normalised per sequence.

    With ``e = E(input_ids)`` [B, L, D] and ``g_b = dL_clean/de_b`` masked to the movable tokens::

        l2:   r_b = eps * g_b / ||g_b||_2        (the fused L2 op from 0 with alpha = eps, ball eps)
        linf: r_b = eps * sign(g_b)              (the fused L-inf op; the FGSM form)
        L = L_clean(e) + L(e + r),  r held constant

    Cost: two forward and two full backward passes.

    Gradients accumulated into ``.grad`` when ``loss`` returns: ``d/dtheta [L_clean + L(e + r)]`` for every
    parameter, the embedding table included (through both gathers). With ``include_clean=False`` the clean
    pass only provides ``g`` (a delta-only gradient, no parameter gradient) and the accumulated gradient is
    ``d/dtheta L(e + r)``. The returned value is the sum of the losses that were back-propagated.

    Args: ``eps`` (>= 0) the per-sequence radius; ``norm`` ``"l2"`` (Miyato et al.) or ``"linf"``;
    ``include_clean``; and the common arguments of :class:`Adversary`.
    """

    name = "fgm"

    def __init__(
        self, model: nn.Module, *, eps: float = 1.0, norm: str = "l2", include_clean: bool = True, **common
    ) -> None:
        super().__init__(model, **common)
        self.eps = check_scalar("eps", eps)
        self.norm = check_choice("norm", norm, ("l2", "linf"))
        self.include_clean = bool(include_clean)

    def _loss(self, batch: TextBatch, backward: _Backward, trace: Trace | None) -> Tensor:
        embeds = self.embed(batch)
        probe = torch.zeros_like(embeds, requires_grad=True)
        self.record(trace, probe)
        if self.include_clean:
            clean = cross_entropy(self.logits(batch, embeds + probe), batch.labels)
            backward(clean)
            grad = probe.grad
            total = clean.detach()
        else:
            clean = cross_entropy(self.logits(batch, embeds.detach() + probe), batch.labels)
            (grad,) = torch.autograd.grad(clean, probe)
            total = torch.zeros((), device=embeds.device)
        assert grad is not None
        r = probe.detach()  # zeros: the step starts from the clean point
        origin = torch.zeros_like(r)
        if self.norm == "l2":
            l2_step_(r, grad, batch.movable, eps=self.eps, alpha=self.eps, origin=origin)
        else:
            sign_step_(r, grad, batch.movable, eps=self.eps, alpha=self.eps, origin=origin)
        self.record(trace, r)
        adversarial = cross_entropy(self.logits(batch, self.embed(batch) + r, last=True), batch.labels)
        backward(adversarial)
        return total + adversarial.detach()
