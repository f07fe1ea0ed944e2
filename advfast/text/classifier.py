"""A classifier seen through its token embeddings: checked batches in, logits from ``inputs_embeds`` out.
Shared by the adversaries and the evaluations, so both run the model the same way."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor, nn

from advfast.text.batch import TextBatch, check_labels, prepare_batch
from advfast.text.model_io import (
    accepts,
    embedding_device,
    input_embeddings,
    is_causal,
    logits_of,
    special_token_ids_of,
)


class EmbeddingClassifier:
    """``model`` with its token-embedding module found once (a clear TypeError when it has none)."""

    def __init__(self, model: nn.Module, special_token_ids: Iterable[int] | None = None) -> None:
        self.model = model
        self.embeddings = input_embeddings(model)
        self.device = embedding_device(self.embeddings)
        self.special_token_ids = special_token_ids_of(model, special_token_ids)
        self.causal = is_causal(model)
        self._pass_position_ids = accepts(model, "position_ids")
        num_labels = getattr(getattr(model, "config", None), "num_labels", None)
        self.num_classes = num_labels if isinstance(num_labels, int) and not isinstance(num_labels, bool) else None
        self._labels_pending = False  # labels wait for the first logits when the config gives no class count

    @property
    def vocabulary_size(self) -> int:
        return self.embeddings.weight.shape[0]  # type: ignore[union-attr]

    def prepare(self, batch: Mapping[str, object]) -> TextBatch:
        """The checked batch (see :func:`advfast.text.batch.prepare_batch`)."""
        text = prepare_batch(
            batch,
            device=self.device,
            special_token_ids=self.special_token_ids,
            num_classes=self.num_classes,
            causal=self.causal,
            pass_position_ids=self._pass_position_ids,
        )
        self._labels_pending = self.num_classes is None
        return text

    def embed(self, batch: TextBatch, input_ids: Tensor | None = None) -> Tensor:
        """Token embeddings ``[B, L, D]`` by the model's embedding module (a gather; in the autograd graph, so
        a training backward through them reaches the embedding table)."""
        return self.embeddings(batch.input_ids if input_ids is None else input_ids)

    def logits(self, batch: TextBatch, inputs_embeds: Tensor, forward: nn.Module | None = None) -> Tensor:
        """The model's logits ``[B, C]`` on ``inputs_embeds`` [B, L, D]; ``forward``: a wrapper of the model
        to run instead (DistributedDataParallel)."""
        module = self.model if forward is None else forward
        logits = logits_of(module(inputs_embeds=inputs_embeds, **batch.model_kwargs))
        if logits.shape[0] != batch.size:
            raise ValueError(f"model must return logits of shape [B, C] = [{batch.size}, C], got {tuple(logits.shape)}")
        if self._labels_pending:
            check_labels(batch.labels, logits.shape[1])
            self._labels_pending = False
        return logits
