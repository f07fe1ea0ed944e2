"""Batches for the evaluations: the first ``limit`` examples, moved to the model's device."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import torch
from torch import Tensor

Batch = Mapping[str, object]


def _rows(batch: Batch, n: int) -> dict[str, object]:
    return {k: (v[:n] if isinstance(v, Tensor) and v.dim() >= 1 else v) for k, v in batch.items()}


def _size(batch: Batch) -> int:
    ids = batch.get("input_ids")
    if not isinstance(ids, Tensor) or ids.dim() != 2:
        raise ValueError("every batch must hold input_ids [B, L] (the dict a tokenizer and TextCollate give)")
    return ids.shape[0]


def limited(batches: Iterable[Batch], limit: int | None, device: torch.device) -> Iterator[dict[str, object]]:
    """The batches, on ``device``, cut after ``limit`` examples in all (None: every example)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be None or an integer >= 1, got {limit!r}")
    seen = 0
    for batch in batches:
        if not isinstance(batch, Mapping):
            raise TypeError(f"batches must yield dicts of tensors, got {type(batch).__name__}")
        size = _size(batch)
        if limit is not None and seen + size > limit:
            batch = _rows(batch, limit - seen)
            size = limit - seen
        yield {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in batch.items()}
        seen += size
        if limit is not None and seen >= limit:
            return


def total_examples(batches: Iterable[Batch], limit: int | None) -> int | None:
    """How many examples the evaluation will see, for progress bars (None when unknown)."""
    dataset = getattr(batches, "dataset", None)
    try:
        n = len(dataset) if dataset is not None else None  # type: ignore[arg-type]
    except TypeError:
        n = None
    if n is None:
        return limit
    return n if limit is None else min(n, limit)
