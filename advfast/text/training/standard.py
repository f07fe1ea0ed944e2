"""Standard fine-tuning as an adversary without a perturbation: the same forward path (token embeddings fed
back as ``inputs_embeds``) and the same ``loss(batch)`` call as the adversarial methods."""

from __future__ import annotations

from torch import Tensor

from advfast.text.adversaries.base import Adversary, Trace, _Backward
from advfast.text.batch import TextBatch
from advfast.text.losses import cross_entropy


class Standard(Adversary):
    """``CE(f(E(x)), y)``, one forward and one backward; ``.grad`` receives its gradient for every parameter."""

    name = "standard"

    def _loss(self, batch: TextBatch, backward: _Backward, trace: Trace | None) -> Tensor:
        embeds = self.embed(batch)
        self.record(trace, embeds.new_zeros(embeds.shape))
        loss = cross_entropy(self.logits(batch, embeds, last=True), batch.labels)
        backward(loss)
        return loss.detach()
