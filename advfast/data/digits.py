"""scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), installed with scikit-learn."""

from __future__ import annotations

import torch
from torch import Tensor

from advfast.data.errors import DatasetUnavailable
from advfast.data.splits import DataSplits, TensorImages, carve

DIGITS_MAX = 16.0  # pixel values are integers 0..16


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A stratified train/test split of the digits: ``x [N, 1, 8, 8]`` float32 in [0, 1], ``y [N]`` int64.

    Returns ``(x_train, y_train, x_test, y_test)``; the same seed gives the same split.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as exc:
        raise DatasetUnavailable("digits", "pip install scikit-learn") from exc
    images, labels = sklearn_digits(return_X_y=True)
    everything = TensorImages(
        torch.tensor(images, dtype=torch.float32).view(-1, 1, 8, 8) / DIGITS_MAX,
        torch.tensor(labels, dtype=torch.int64),
    )
    train, test = carve(everything, test_fraction, seed)
    return train.x, train.y, test.x, test.y


def digits_splits(val_fraction: float = 0.1, seed: int = 0) -> DataSplits:
    """Digits as train / validation / test: 20% held out for test, then ``val_fraction`` of the rest."""
    x_train, y_train, x_test, y_test = load_digits(seed=seed)
    train, val = carve(TensorImages(x_train, y_train), val_fraction, seed)
    classes = [str(d) for d in range(10)]
    return DataSplits("digits", train, val, TensorImages(x_test, y_test), classes)
