"""R3F: random-noise regularised fine-tuning (Aghajanyan, Shrivastava, Gupta, Goyal, Zettlemoyer & Gupta,
"Better Fine-Tuning by Reducing Representational Collapse", ICLR 2021), as fairseq does it
(``examples/rxf/rxf_src/sentence_prediction_r3f.py``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advfast.text.adversaries.base import Adversary, Trace, _Backward
from advfast.text.batch import TextBatch
from advfast.text.losses import cross_entropy, symmetric_kl
from advfast.text.validation import check_choice, check_scalar

NOISES = ("uniform", "normal")


class R3F(Adversary):
    """Clean loss plus the symmetric KL between the clean and a randomly perturbed pass; no ascent.

    ``e = E(input_ids)``; ``n = U(-eps, eps) * m`` (``noise="uniform"``, fairseq's default) or
    ``N(0, eps^2) * m`` (``"normal"``), m the movable tokens; the noised pass runs on ``sg(e) + n`` (as fairseq:
    ``token_embeddings.detach().clone() + noise``)::

        L = CE(f(e), y) + weight * (1/B) sum_b [KL(p_b || q_b) + KL(q_b || p_b)]
        p = softmax f(e),  q = softmax f(sg(e) + n)

    with gradients through both p and q (fairseq detaches neither). Cost: two forward passes and one backward
    through both. Departure from fairseq: padding and special tokens get no noise (fairseq's covers every
    position).

    Gradients accumulated into ``.grad`` when ``loss`` returns: ``d/dtheta L`` for every parameter; the
    embedding table only through the clean pass. Returns L's value.

    Args: ``eps`` (>= 0) noise scale (fairseq ``--eps``, 1e-5); ``noise``; ``weight`` (>= 0, fairseq
    ``--r3f-lambda``, 1.0); ``same_dropout`` (default False: independent masks, as fairseq); and the common
    arguments of :class:`Adversary`.
    """

    name = "r3f"

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float = 1e-5,
        noise: str = "uniform",
        weight: float = 1.0,
        same_dropout: bool = False,
        **common,
    ) -> None:
        super().__init__(model, **common)
        self.eps = check_scalar("eps", eps)
        self.noise = check_choice("noise", noise, NOISES)
        self.weight = check_scalar("weight", weight)
        self.same_dropout = bool(same_dropout)

    def _loss(self, batch: TextBatch, backward: _Backward, trace: Trace | None) -> Tensor:
        embeds = self.embed(batch)
        replay = self.dropout_replay(self.same_dropout)
        self.record(trace, torch.zeros_like(embeds))
        clean_logits = self.logits(batch, embeds)
        fixed = embeds.detach()
        noise = torch.empty_like(fixed)
        if self.noise == "uniform":
            noise.uniform_(-self.eps, self.eps, generator=self.generator)
        else:
            noise.normal_(0.0, self.eps, generator=self.generator)
        noise.mul_(batch.movable.unsqueeze(-1).to(noise.dtype))
        replay.rewind()
        self.record(trace, noise)
        noised_logits = self.logits(batch, fixed + noise, last=True)
        total = cross_entropy(clean_logits, batch.labels) + self.weight * symmetric_kl(noised_logits, clean_logits)
        backward(total)
        return total.detach()
