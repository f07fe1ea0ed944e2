"""In-memory image data sets and their train/validation/test splits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import Dataset


class TensorImages(Dataset):
    """Images ``x [N, C, H, W]`` (float32 in [0, 1]) with labels ``y [N]`` (int64), held in memory.

    ``__getitems__`` returns a whole batch by one indexing operation, so a DataLoader over it costs one
    gather per batch instead of one Python call per sample.
    """

    def __init__(self, x: Tensor, y: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"x must be [N, C, H, W], got shape {tuple(x.shape)}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"y must be [N] = [{x.shape[0]}], got shape {tuple(y.shape)}")
        self.x = x
        self.y = y.long()

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.x[index], self.y[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.x[index], self.y[index]

    def subset(self, index: Tensor) -> TensorImages:
        return TensorImages(self.x[index], self.y[index])


@dataclass
class DataSplits:
    """A data set split three ways. ``test`` is held out; ``val`` was carved from the training data unless
    the data set ships its own."""

    name: str
    train: TensorImages
    val: TensorImages
    test: TensorImages
    classes: list[str]
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_labels(self.train.y, self.classes, f"{self.name} (training split)", every_class=False)
        for split, part in (("validation", self.val), ("test", self.test)):
            check_labels(part.y, self.classes, f"{self.name} ({split} split)", every_class=False, minimum=0)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "classes": self.classes,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "notes": self.notes,
        }


def check_labels(y: Tensor, classes: Sequence[str], source: str, *, every_class: bool = True, minimum: int = 2) -> None:
    """Labels ``y`` index ``classes`` (0..C-1); the data has at least ``minimum`` distinct classes and, with
    ``every_class``, every class occurs. A data set that breaks these trains a model whose numbers mean
    nothing (one class: 100% "robust" accuracy; a label 100 among 0..9: a 101-class model)."""
    if len(y) == 0:
        return
    present = torch.unique(y)
    low, high = int(present[0]), int(present[-1])
    if low < 0 or high >= len(classes):
        raise ValueError(
            f"{source}: labels must be class indices 0..{len(classes) - 1} for the {len(classes)} classes "
            f"{_shown(classes)}, found labels {low}..{high}"
        )
    if len(present) < minimum:
        raise ValueError(f"{source}: needs at least {minimum} classes to learn anything, found only {present.tolist()}")
    if every_class and len(present) < len(classes):
        missing = sorted(set(range(len(classes))) - set(present.tolist()))
        raise ValueError(
            f"{source}: labels must be 0..C-1 with every class present; {len(missing)} of {len(classes)} classes "
            f"have no sample ({_shown(missing)}); renumber the labels, or give the class names"
        )


def _shown(items: Sequence[object], limit: int = 8) -> str:
    items = list(items)
    more = f", ... ({len(items)} in all)" if len(items) > limit else ""
    return "[" + ", ".join(str(i) for i in items[:limit]) + more + "]"


def stratified_split(y: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (rest, part) with ``part`` holding ``fraction`` of each class (at least one sample of each
    class that has two or more), chosen reproducibly from ``seed``."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    rest, part = [], []
    for label in torch.unique(y).tolist():
        members = torch.nonzero(y == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        take = round(fraction * len(members))
        take = min(max(take, 1 if len(members) > 1 else 0), len(members) - 1)
        part.append(members[:take])
        rest.append(members[take:])
    return torch.cat(rest).sort().values, torch.cat(part).sort().values


def carve(data: TensorImages, fraction: float, seed: int) -> tuple[TensorImages, TensorImages]:
    """Split ``data`` into (rest, part) stratified by label."""
    rest, part = stratified_split(data.y, fraction, seed)
    return data.subset(rest), data.subset(part)


def train_subset(splits: DataSplits, fraction: float, seed: int) -> DataSplits:
    """The same splits with only ``fraction`` of the training set (stratified), for low-data experiments."""
    if fraction == 1.0:
        return splits
    _, kept = carve(splits.train, fraction, seed)
    note = f"training subset: {fraction:g} of {len(splits.train)} = {len(kept)} (stratified, seed {seed})"
    return DataSplits(splits.name, kept, splits.val, splits.test, splits.classes, [*splits.notes, note])
