"""FreeLB: free large-batch adversarial training (Zhu, Cheng, Gan, Sun, Goldstein & Liu, "FreeLB: Enhanced
Adversarial Training for Natural Language Understanding", ICLR 2020), as its reference code does it
(github.com/zhuchen03/FreeLB: ``huggingface-transformers/examples/run_glue_freelb.py`` and, for the K+1-pass
variant, ``fairseq-RoBERTa/fairseq/tasks/sentence_prediction.py: freelb_train_step``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advfast.text.adversaries.base import Adversary, Trace, _Backward
from advfast.text.batch import TextBatch
from advfast.text.losses import cross_entropy
from advfast.text.perturbation import freelb_init, l2_step_, max_scaled_step_
from advfast.text.validation import check_choice, check_count, check_radius, check_scalar

VARIANTS = ("huggingface", "fairseq")


class FreeLB(Adversary):
    """K ascent passes whose parameter gradients all accumulate ("free" training on the adversarial path).

    ``e_t = E(input_ids)`` (a fresh gather each pass, so the embedding table collects gradients too);
    ``delta_0`` from ``init_mag`` (reference ``adv_init_mag``)::

        l2:   delta_0 = U(-1, 1) * m * init_mag / sqrt(L_b * D)   (m: movable tokens, L_b: real length)
        linf: delta_0 = U(-init_mag, init_mag) * m

    Pass t = 0 .. P-1: ``l_t = CE(f(e_t + delta_t), y) / P`` and ``l_t.backward()`` (parameters and ``delta_t``
    receive gradients); between passes, with ``g = d l_t / d delta_t`` masked to the movable tokens::

        l2:   delta <- P_eps(delta + alpha * g / ||g||_2)              per sequence (the fused L2 op)
        linf: delta <- clip(delta + alpha * g / ||g||_inf, -eps, eps)  per sequence (eager, see below)

    ``variant="huggingface"`` (the reference's transformers script): P = K passes, K - 1 updates.
    ``variant="fairseq"`` (the reference's fairseq-RoBERTa task): P = K + 1 passes, K updates, each loss
    divided by K + 1; its first pass is at ``delta_0`` (the clean input when ``init_mag`` = 0). The reference
    code names neither; "K + 1" is the number of passes.

    ``eps`` is the reference's ``adv_max_norm`` (None: no projection, its 0). The L2 step is the fused op
    (the reference divides by ``max(||g||, 1e-8)``, the op by ``||g|| + 1e-12``; they differ only for
    ``||g|| < 1e-8``). The L-inf step divides by the sequence's largest ``|g|`` instead of taking ``sign(g)``,
    as the reference does, so it runs eagerly (a few element-wise ops on [B, L, D]). Departures from the
    reference: padding and special tokens never move (the reference initialises every real token, special
    ones included, and steps along the unmasked gradient, which is zero on padding for BERT-style models);
    with ``same_dropout`` (default) every pass draws the same dropout masks, as the reference's patched models
    do with their saved masks (here by rewinding torch's generator).

    Gradients accumulated into ``.grad`` when ``loss`` returns: ``sum_t d/dtheta l_t`` = the mean over the P
    passes of ``d/dtheta CE(f(e_t + delta_t), y)``, for every parameter, the embedding table included. The
    returned value is ``sum_t l_t``.

    Args: ``eps`` radius (None or inf: unbounded); ``alpha`` (> 0) step; ``steps`` K >= 1; ``init_mag``
    (>= 0); ``norm`` ``"l2"`` or ``"linf"``; ``variant``; ``same_dropout``; and the common arguments of
    :class:`Adversary`. Defaults follow the reference's SST-2 launch line (adv-lr 0.1, adv-init-mag 1.0,
    adv-max-norm 0.6, 3 steps).
    """

    name = "freelb"

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float | None = 0.6,
        alpha: float = 0.1,
        steps: int = 3,
        init_mag: float = 1.0,
        norm: str = "l2",
        variant: str = "huggingface",
        same_dropout: bool = True,
        **common,
    ) -> None:
        super().__init__(model, **common)
        self.eps = check_radius("eps", eps)
        self.alpha = check_scalar("alpha", alpha, positive=True)
        self.steps = check_count("steps", steps)
        self.init_mag = check_scalar("init_mag", init_mag)
        self.norm = check_choice("norm", norm, ("l2", "linf"))
        self.variant = check_choice("variant", variant, VARIANTS)
        self.same_dropout = bool(same_dropout)

    @property
    def passes(self) -> int:
        return self.steps + (1 if self.variant == "fairseq" else 0)

    def _loss(self, batch: TextBatch, backward: _Backward, trace: Trace | None) -> Tensor:
        embeds = self.embed(batch)
        delta = freelb_init(
            embeds.detach(),
            batch.movable,
            batch.lengths,
            init_mag=self.init_mag,
            norm=self.norm,
            generator=self.generator,
        )
        origin = torch.zeros_like(delta) if self.norm == "l2" else None
        replay = self.dropout_replay(self.same_dropout)
        passes = self.passes
        total = torch.zeros((), device=delta.device)
        for t in range(passes):
            if t > 0:
                embeds = self.embed(batch)
            replay.rewind()
            delta.requires_grad_(True)
            self.record(trace, delta)
            loss = cross_entropy(self.logits(batch, embeds + delta, last=t == passes - 1), batch.labels) / passes
            backward(loss)
            total = total + loss.detach()
            if t == passes - 1:
                break
            grad = delta.grad
            assert grad is not None
            delta = delta.detach()
            if self.norm == "l2":
                l2_step_(delta, grad, batch.movable, eps=self.eps, alpha=self.alpha, origin=origin)
            else:
                max_scaled_step_(delta, grad, batch.movable, eps=self.eps, alpha=self.alpha, per_token=False)
        return total
