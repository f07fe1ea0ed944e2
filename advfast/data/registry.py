"""Data sets by name (or path), as the CLI and the trainers ask for them, with the radius papers attack each at."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from advfast.data.digits import digits_splits
from advfast.data.files import folder_splits, npz_splits
from advfast.data.mnist import fashion_mnist_splits, mnist_splits
from advfast.data.splits import DataSplits, train_subset

DATASETS: dict[str, Callable[[int], DataSplits]] = {
    "digits": lambda seed: digits_splits(seed=seed),
    "mnist": lambda seed: mnist_splits(),
    "fashion-mnist": lambda seed: fashion_mnist_splits(seed=seed),
}

# The radii papers attack each data set at (inputs in [0, 1]); data given by path get CIFAR-10's, the field's
# most common (8/255 in L-inf, 0.5 in L2).
STANDARD_EPS: dict[str, dict[str, float]] = {
    "digits": {"linf": 0.1, "l2": 1.0},
    "mnist": {"linf": 0.3, "l2": 2.0},
    "fashion-mnist": {"linf": 0.1, "l2": 1.5},
}
USER_DATA_EPS = {"linf": 8 / 255, "l2": 0.5}


def standard_eps(name: str, norm: str) -> float:
    """The radius the data set ``name`` is usually attacked at under ``norm`` ("linf" or "l2")."""
    return STANDARD_EPS.get(name, USER_DATA_EPS)[norm]


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
