"""The evaluation data as batches ``(x, y)``, whatever form the caller holds it in."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

# A map-style or iterable Dataset of (x, y) pairs, a DataLoader of (x, y) batches, or a pair of tensors.
EvalData = Dataset | DataLoader | tuple[Tensor, Tensor]


def batches(data: EvalData, batch_size: int) -> tuple[Iterable[tuple[Tensor, Tensor]], int | None]:
    """The batches of ``data`` in order, and how many there are (None when that is unknown).

    - ``(x, y)`` tensors are cut into consecutive slices of ``batch_size`` samples;
    - a ``Dataset`` is batched by a ``DataLoader(batch_size=batch_size, shuffle=False)``;
    - a ``DataLoader`` is used as it is (its own batch size and order; ``batch_size`` is ignored).

    Raises ``ValueError`` naming ``data`` when it is empty (as far as its length says) or of another kind,
    and naming ``batch_size`` when that is not an integer >= 1.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data
        if x.dim() < 1 or y.dim() != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"data as (x, y) tensors needs x [N, ...] and y [N] with the same N, got shapes "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        if x.shape[0] == 0:
            raise ValueError("data is empty: (x, y) hold no samples")
        starts = range(0, x.shape[0], batch_size)
        return ((x[s : s + batch_size], y[s : s + batch_size]) for s in starts), len(starts)
    if isinstance(data, DataLoader):
        loader = data
    elif isinstance(data, Dataset):
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    else:
        raise ValueError(
            "data must be a torch Dataset of (x, y), a DataLoader of (x, y) batches or a pair of tensors "
            f"(x, y), got {type(data).__name__}"
        )
    try:
        count: int | None = len(loader)
    except TypeError:  # an IterableDataset without __len__
        count = None
    if count == 0:
        raise ValueError("data is empty: the dataset has no samples")
    return _checked(loader), count


def sample_count(data: EvalData) -> int | None:
    """How many samples ``data`` holds, where its length says (None for an iterable dataset without one)."""
    if isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[0], Tensor):
        return int(data[0].shape[0])
    dataset = data.dataset if isinstance(data, DataLoader) else data
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        return None


def _checked(loader: Iterable[Any]) -> Iterator[tuple[Tensor, Tensor]]:
    for index, batch in enumerate(loader):
        if not isinstance(batch, tuple | list) or len(batch) < 2:
            raise ValueError(f"data must yield (x, y) batches; batch {index} is a {type(batch).__name__}")
        x, y = batch[0], batch[1]
        if not isinstance(x, Tensor):
            raise ValueError(f"data must yield x as a tensor; batch {index} has a {type(x).__name__}")
        yield x, torch.as_tensor(y)
