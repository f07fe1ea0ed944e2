"""Labelled texts in memory and their train/validation/test splits (stratified, fixed by a seed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import Dataset

from advfast.data.splits import stratified_split


class TextExamples(Dataset):
    """``texts[i]`` with integer label ``labels[i]`` (0..C-1); items are ``{"text": str, "label": int}``, the
    input of :class:`advfast.data.text.TextCollate`."""

    def __init__(self, texts: Sequence[str], labels: Sequence[int] | Tensor) -> None:
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != (len(texts),):
            raise ValueError(f"labels must be [N] = [{len(texts)}], got shape {tuple(labels.shape)}")
        self.texts = list(texts)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict[str, object]:
        return {"text": self.texts[index], "label": int(self.labels[index])}

    def subset(self, index: Tensor) -> TextExamples:
        rows = index.tolist()
        return TextExamples([self.texts[i] for i in rows], self.labels[index])


@dataclass
class TextSplits:
    """A text data set split three ways; ``test`` is held out. ``notes`` say where each split came from."""

    name: str
    train: TextExamples
    val: TextExamples
    test: TextExamples
    classes: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "classes": self.classes,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "notes": self.notes,
        }


def labels_from_values(values: Sequence[object], source: str) -> tuple[list[int], list[str]]:
    """Integer labels and class names from a column of raw labels: integers (or integer strings) must be
    ``0..C-1`` with every class present; other values are class names, mapped to indices in sorted order.
    At least two classes."""
    if not values:
        raise ValueError(f"{source}: no examples")
    as_ints: list[int] | None = []
    for v in values:
        if isinstance(v, bool):
            as_ints = None
            break
        if isinstance(v, int):
            as_ints.append(v)
        elif isinstance(v, str) and v.strip().lstrip("-").isdigit():
            as_ints.append(int(v.strip()))
        else:
            as_ints = None
            break
    if as_ints is not None:
        present = sorted(set(as_ints))
        if present != list(range(len(present))):
            raise ValueError(
                f"{source}: integer labels must be 0..C-1 with every class present, found {present[:20]}"
                + (" ..." if len(present) > 20 else "")
            )
        labels, classes = as_ints, [str(c) for c in present]
    else:
        names = sorted({str(v) for v in values})
        index = {name: i for i, name in enumerate(names)}
        labels, classes = [index[str(v)] for v in values], names
    if len(classes) < 2:
        raise ValueError(f"{source}: a classification data set needs at least 2 classes, found {classes}")
    return labels, classes


def split_examples(
    name: str,
    data: TextExamples,
    classes: list[str],
    *,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    test: TextExamples | None = None,
    val: TextExamples | None = None,
    notes: Sequence[str] = (),
) -> TextSplits:
    """Carve the test split (``test_fraction``, stratified, ``seed``) unless given, then the validation split
    (``val_fraction`` of the rest, stratified, ``seed + 1``) unless given. Each split's rows are then put in an
    order drawn from ``seed + 2`` (source files are often grouped by label), so that the first N examples,
    which evaluations with a ``limit`` take, are a random sample."""
    notes = list(notes)
    if test is None:
        rest, part = stratified_split(data.labels, test_fraction, seed)
        data, test = data.subset(rest), data.subset(part)
        notes.append(f"test: {test_fraction:g} held out (stratified, seed {seed})")
    if val is None:
        rest, part = stratified_split(data.labels, val_fraction, seed + 1)
        data, val = data.subset(rest), data.subset(part)
        notes.append(f"validation: {val_fraction:g} of the rest (stratified, seed {seed + 1})")
    generator = torch.Generator().manual_seed(seed + 2)
    data, val, test = (part.subset(torch.randperm(len(part), generator=generator)) for part in (data, val, test))
    return TextSplits(name, data, val, test, classes, notes)
