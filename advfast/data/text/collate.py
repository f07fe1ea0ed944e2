"""Batches for transformer classifiers: tokenize a list of examples and pad to the batch's longest sequence."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


class TextCollate:
    """``collate(items) -> batch`` for a DataLoader over :class:`TextExamples` (items ``{"text", "label"}``).

    Dynamic padding: sequences are truncated to ``max_length`` tokens and padded to the longest one in the
    batch (not to the model's maximum), on the tokenizer's ``padding_side``. The batch holds ``input_ids``,
    ``attention_mask``, ``special_tokens_mask`` (so the adversaries never move special tokens),
    ``token_type_ids`` when the tokenizer makes them, and ``labels`` [B] (int64), all [B, L] int64 tensors.
    """

    def __init__(self, tokenizer: object, max_length: int = 128) -> None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}")
        if not callable(tokenizer):
            raise TypeError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, items: Sequence[dict[str, object]]) -> dict[str, Tensor]:
        texts = [str(item["text"]) for item in items]
        encoded = self.tokenizer(  # type: ignore[operator]
            texts,
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            return_special_tokens_mask=True,
        )
        batch = {key: value for key, value in encoded.items()}
        batch["labels"] = torch.tensor([int(item["label"]) for item in items], dtype=torch.int64)
        return batch


def text_loader(
    examples: Dataset,
    tokenizer: object,
    *,
    batch_size: int = 32,
    max_length: int = 128,
    shuffle: bool = False,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader of tokenized, dynamically padded batches; shuffled reproducibly from ``seed``."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        examples,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=TextCollate(tokenizer, max_length),
    )
