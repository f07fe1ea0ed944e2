"""Data sets by name (or path), as the CLI and the trainer ask for them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from advfast.data.digits import digits_splits
from advfast.data.files import folder_splits, npz_splits
from advfast.data.mnist import fashion_mnist_splits, mnist_splits
from advfast.data.splits import DataSplits, train_subset

DATASETS: dict[str, Callable[..., DataSplits]] = {
    "digits": lambda seed: digits_splits(seed=seed),
    "mnist": lambda seed: mnist_splits(),
    "fashion-mnist": lambda seed: fashion_mnist_splits(seed=seed),
}


def load_dataset(name: str, *, subset: float = 1.0, seed: int = 0) -> DataSplits:
    """``name`` is one of ``DATASETS`` or a path to a ``.npz`` file or to a folder of class sub-folders.
    ``subset`` keeps that fraction of the training split (stratified by class)."""
    if not 0.0 < subset <= 1.0:
        raise ValueError(f"subset must be in (0, 1], got {subset}")
    if name in DATASETS:
        splits = DATASETS[name](seed)
    else:
        path = Path(name)
        if path.suffix == ".npz" and path.is_file():
            splits = npz_splits(path, seed=seed)
        elif path.is_dir():
            splits = folder_splits(path, seed=seed)
        else:
            raise ValueError(
                f"data must be one of {sorted(DATASETS)}, a .npz file or a folder of class sub-folders; got {name!r}"
            )
    return train_subset(splits, subset, seed)
