"""SMART's smoothness-inducing adversarial regulariser (Jiang, He, Chen, Liu, Gao & Zhao, "SMART: Robust and
Efficient Fine-Tuning for Pre-trained Natural Language Models through Principled Regularized Optimization",
ACL 2020), as its reference code does it (github.com/namisan/mt-dnn: ``mt_dnn/perturbation.py``,
``SmartPerturbation``; ``mt_dnn/loss.py``: ``stable_kl``, ``SymKlCriterion``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advfast.text.adversaries.base import Adversary, Trace, _Backward
from advfast.text.batch import TextBatch
from advfast.text.losses import cross_entropy, smart_symmetric_kl, stable_kl
from advfast.text.perturbation import l2_step_, max_scaled_step_, sphere_step_
from advfast.text.validation import check_choice, check_count, check_scalar

PROJECTIONS = ("sphere", "ball")


class SMART(Adversary):
    """Clean loss plus a symmetric-KL smoothness term at a per-token adversarial perturbation of the
    embeddings, found against the detached clean predictions.

    ``e = E(input_ids)``; ``z = f(e)`` the clean logits (trained); ``delta_0 = N(0, noise_std^2) * m`` (m:
    movable tokens). K ascent steps, each with ``g = d/d delta stable_kl(f(e + delta), sg(z))`` by
    ``torch.autograd.grad`` w.r.t. delta only (the reference's objective: a KL-like divergence on log-odds,
    summed over the batch; see :func:`advfast.text.losses.stable_kl`), then per token, with p = inf or 2::

        projection="sphere" (the reference code):  s = delta + alpha * g;  delta <- eps * s / (||s||_p + 1e-6)
        projection="ball"   (the paper's Algorithm 1): delta <- P_{||.||_p <= eps}(delta + alpha * g / ||g||_p)

    then ``L = CE(z, y) + weight * SymKL(z, f(e + delta_K))`` with SymKL as in
    :func:`advfast.text.losses.smart_symmetric_kl`, back-propagated once (through the clean and the
    adversarial pass; the embedding table gets gradients from both).

    Mapping onto the fused ops: ``ball`` with ``norm="l2"`` is the fused L2 op on ``[B*L, D]`` samples. The
    reference's ``sphere`` update steps along the raw gradient and rescales onto the sphere (the reference's
    radius is 1: it divides by the norm plus its ``epsilon`` 1e-6), and ``ball`` with L-inf divides by
    ``||g||_inf`` instead of taking a sign: neither is a fused op, so both run eagerly in float32. Departures
    from the reference: padding and special tokens never move (its noise covers every position); a sequence
    whose ascent gradient is not finite keeps its noise (the reference drops the whole regulariser for the
    batch); the perturbation acts on ``get_input_embeddings()``'s output, where the reference perturbs the
    embedding layer's LayerNorm-ed output (entries of scale 1). Hence the default ``eps = 0.05`` (the
    reference's radius 1 rescaled to word embeddings, whose entries have a standard deviation of about 0.05 in
    BERT-family models: 0.056 in MiniLM-L6); ``alpha`` (1e-3) and ``noise_std`` (1e-5) are the reference's.

    Cost: one clean forward, K forward + delta-only backward passes, one adversarial forward, one backward
    through both.

    Gradients accumulated into ``.grad`` when ``loss`` returns: ``d/dtheta [CE(z, y) + weight * SymKL]`` for
    every parameter, the embedding table included; the ascent adds none. Returns that loss's value.

    Args: ``eps`` (>= 0) per-token radius; ``alpha`` (> 0) step; ``steps`` K >= 1; ``noise_std`` (>= 0);
    ``norm`` ``"linf"`` (reference default) or ``"l2"``; ``projection``; ``weight`` (>= 0, the reference's
    ``adv_alpha``); and the common arguments of :class:`Adversary`.
    """

    name = "smart"

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float = 0.05,
        alpha: float = 1e-3,
        steps: int = 1,
        noise_std: float = 1e-5,
        norm: str = "linf",
        projection: str = "sphere",
        weight: float = 1.0,
        same_dropout: bool = False,
        **common,
    ) -> None:
        super().__init__(model, **common)
        self.eps = check_scalar("eps", eps)
        self.alpha = check_scalar("alpha", alpha, positive=True)
        self.steps = check_count("steps", steps)
        self.noise_std = check_scalar("noise_std", noise_std)
        self.norm = check_choice("norm", norm, ("linf", "l2"))
        self.projection = check_choice("projection", projection, PROJECTIONS)
        self.weight = check_scalar("weight", weight)
        self.same_dropout = bool(same_dropout)

    def _loss(self, batch: TextBatch, backward: _Backward, trace: Trace | None) -> Tensor:
        embeds = self.embed(batch)
        replay = self.dropout_replay(self.same_dropout)
        self.record(trace, torch.zeros_like(embeds))
        clean_logits = self.logits(batch, embeds)
        clean = cross_entropy(clean_logits, batch.labels)
        target = clean_logits.detach()
        fixed = embeds.detach()
        noise = torch.empty_like(fixed).normal_(generator=self.generator)
        delta = noise * (self.noise_std * batch.movable.unsqueeze(-1).to(fixed.dtype))
        for _ in range(self.steps):
            replay.rewind()
            point = delta.detach().requires_grad_(True)
            self.record(trace, point)
            objective = stable_kl(self.logits(batch, fixed + point), target)
            (grad,) = torch.autograd.grad(objective, point)
            delta = delta.detach()
            self._step(delta, grad, batch)
        replay.rewind()
        self.record(trace, delta)
        adversarial_logits = self.logits(batch, embeds + delta, last=True)
        total = clean + self.weight * smart_symmetric_kl(clean_logits, adversarial_logits)
        backward(total)
        return total.detach()

    def _step(self, delta: Tensor, grad: Tensor, batch: TextBatch) -> None:
        if self.projection == "sphere":
            sphere_step_(delta, grad, batch.movable, eps=self.eps, alpha=self.alpha, norm=self.norm)
        elif self.norm == "l2":
            l2_step_(delta, grad, batch.movable, eps=self.eps, alpha=self.alpha, per_token=True)
        else:
            max_scaled_step_(delta, grad, batch.movable, eps=self.eps, alpha=self.alpha, per_token=True)
