"""Small reference classifiers for the offline data sets."""

from __future__ import annotations

from torch import nn


def digits_cnn(classes: int = 10) -> nn.Sequential:
    """A small CNN for 1x8x8 digits: two 3x3 convolutions (the second with stride 2) with BatchNorm, then two
    linear layers. About 43k parameters."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 32),
        nn.ReLU(),
        nn.Linear(32, classes),
    )
