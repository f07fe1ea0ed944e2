"""PGD-K on word embeddings: Madry et al. ("Towards Deep Learning Models Resistant to Adversarial Attacks",
ICLR 2018) in embedding space, as the "vanilla PGD" baseline of FreeLB's reference code (Zhu et al., 2020)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advfast.text.adversaries.base import Adversary, Trace, _Backward
from advfast.text.batch import TextBatch
from advfast.text.losses import cross_entropy, cross_entropy_sum
from advfast.text.perturbation import ball_start, l2_step_, sign_step_
from advfast.text.validation import check_choice, check_count, check_scalar


class PGD(Adversary):
    """K projected ascent steps with frozen weights, then one training pass on the adversarial embeddings.

    ``e = E(input_ids)`` [B, L, D]; ``delta_0`` uniform in each sequence's eps-ball (over its movable tokens;
    0 without ``random_start``); per step ``g = d/d delta sum_b CE(f(e + delta)_b, y_b)`` by
    ``torch.autograd.grad`` w.r.t. delta only (no weight-gradient work, no ``.grad`` touched), then the fused
    op per sequence (``[B, L*D]`` samples)::

        l2:   delta_b <- P_eps(delta_b + alpha * g_b / ||g_b||_2)
        linf: delta   <- clip(delta + alpha * sign(g), -eps, eps)
        L = CE(f(e + delta_K), y)   (+ CE(f(e), y) with include_clean)

    Cost: K forward + delta-only backward passes, then one forward and one full backward (two with
    ``include_clean``; then, without a random start, the clean backward also gives the first step's gradient,
    saving one ascent pass). With ``same_dropout`` (default, as FreeLB's reference PGD keeps its dropout
    masks) every pass of a call draws the same dropout masks.

    Gradients accumulated into ``.grad`` when ``loss`` returns: ``d/dtheta CE(f(e + delta_K), y)``
    (``+ d/dtheta CE(f(e), y)`` with ``include_clean``), the embedding table included; the ascent adds none.

    Args: ``eps`` (>= 0) radius per sequence; ``alpha`` (> 0) step, default ``2.5 * eps / steps``; ``steps``
    K >= 1; ``norm`` ``"l2"`` or ``"linf"``; ``random_start``; ``include_clean``; ``same_dropout``; and the
    common arguments of :class:`Adversary`.
    """

    name = "pgd"

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float = 1.0,
        alpha: float | None = None,
        steps: int = 3,
        norm: str = "l2",
        random_start: bool = True,
        include_clean: bool = False,
        same_dropout: bool = True,
        **common,
    ) -> None:
        super().__init__(model, **common)
        self.eps = check_scalar("eps", eps)
        self.steps = check_count("steps", steps)
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else check_scalar("alpha", alpha, positive=True)
        self.norm = check_choice("norm", norm, ("l2", "linf"))
        self.random_start = bool(random_start)
        self.include_clean = bool(include_clean)
        self.same_dropout = bool(same_dropout)

    def _loss(self, batch: TextBatch, backward: _Backward, trace: Trace | None) -> Tensor:
        embeds = self.embed(batch)
        fixed = embeds.detach()
        if self.random_start:
            delta = ball_start(fixed, batch.movable, eps=self.eps, norm=self.norm, generator=self.generator)
        else:
            delta = torch.zeros_like(fixed)
        origin = torch.zeros_like(delta)
        replay = self.dropout_replay(self.same_dropout)
        total = torch.zeros((), device=fixed.device)
        first_grad = None
        if self.include_clean:
            replay.rewind()
            probe = None if self.random_start else torch.zeros_like(fixed, requires_grad=True)
            self.record(trace, torch.zeros_like(fixed))
            clean = cross_entropy(self.logits(batch, embeds if probe is None else embeds + probe), batch.labels)
            backward(clean)
            total = total + clean.detach()
            first_grad = None if probe is None else probe.grad
            embeds = self.embed(batch)  # a fresh gather: the clean backward freed the first one's graph
        for step in range(self.steps):
            if step == 0 and first_grad is not None:
                grad = first_grad
            else:
                replay.rewind()
                point = delta.detach().requires_grad_(True)
                self.record(trace, point)
                objective = cross_entropy_sum(self.logits(batch, fixed + point), batch.labels)
                (grad,) = torch.autograd.grad(objective, point)
            if self.norm == "l2":
                l2_step_(delta, grad, batch.movable, eps=self.eps, alpha=self.alpha, origin=origin)
            else:
                sign_step_(delta, grad, batch.movable, eps=self.eps, alpha=self.alpha, origin=origin)
        replay.rewind()
        self.record(trace, delta)
        adversarial = cross_entropy(self.logits(batch, embeds + delta, last=True), batch.labels)
        backward(adversarial)
        return total + adversarial.detach()
