"""scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), installed with scikit-learn."""

from __future__ import annotations

import torch
from torch import Tensor

DIGITS_MAX = 16.0  # pixel values are integers 0..16


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A stratified train/test split of the digits: ``x [N, 1, 8, 8]`` float32 in [0, 1], ``y [N]`` int64.

    Returns ``(x_train, y_train, x_test, y_test)``; the same seed gives the same split.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise ImportError("the digits data set comes with scikit-learn: pip install scikit-learn") from exc
    images, labels = sklearn_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )

    def as_tensors(x, y) -> tuple[Tensor, Tensor]:
        x = torch.tensor(x, dtype=torch.float32).view(-1, 1, 8, 8) / DIGITS_MAX
        return x, torch.tensor(y, dtype=torch.int64)

    return (*as_tensors(x_train, y_train), *as_tensors(x_test, y_test))
