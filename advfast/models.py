"""Small reference classifiers for the offline data sets, by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def digits_cnn(classes: int = 10) -> nn.Sequential:
    """A small CNN for 1x8x8 digits: two 3x3 convolutions (the second with stride 2) with BatchNorm, then two
    linear layers. About 52k parameters (10 classes)."""
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


def mnist_cnn(classes: int = 10, channels: int = 1, width: int = 32, hidden: int = 256) -> nn.Sequential:
    """A CNN for 28x28 images: two 4x4 stride-2 convolutions (28 -> 14 -> 7), then two linear layers. With
    ``width=16, hidden=100`` it is the MNIST network of Wong et al. (2020); the default is twice as wide
    (about 0.84M parameters, 2.5M multiply-adds per image)."""
    return nn.Sequential(
        nn.Conv2d(channels, width, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * width * 7 * 7, hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    )


def generic_cnn(classes: int, channels: int, size: tuple[int, int]) -> nn.Sequential:
    """Any image size: three 3x3 convolutions with BatchNorm (the last two stride 2), global average pooling
    and a linear layer."""
    del size  # global pooling makes the network size-independent
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.Conv2d(64, 128, 3, stride=2, padding=1),
        nn.BatchNorm2d(128),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, classes),
    )


MODELS: dict[str, Callable[[int, tuple[int, int, int]], nn.Module]] = {
    "digits-cnn": lambda classes, shape: digits_cnn(classes),
    "mnist-cnn": lambda classes, shape: mnist_cnn(classes, channels=shape[0]),
    "mnist-cnn-small": lambda classes, shape: mnist_cnn(classes, channels=shape[0], width=16, hidden=100),
    "cnn": lambda classes, shape: generic_cnn(classes, shape[0], (shape[1], shape[2])),
}


def default_model_name(input_shape: tuple[int, int, int]) -> str:
    """The reference network for an input shape: digits-cnn for 8x8, mnist-cnn for 28x28, else cnn."""
    if tuple(input_shape[1:]) == (8, 8):
        return "digits-cnn"
    if tuple(input_shape[1:]) == (28, 28):
        return "mnist-cnn"
    return "cnn"


def build_model(name: str, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """The network ``name`` (``"auto"``: by input shape) for ``num_classes`` classes of ``input_shape`` images."""
    if name == "auto":
        name = default_model_name(input_shape)
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)} or 'auto', got {name!r}")
    if name in ("digits-cnn",) and tuple(input_shape) != (1, 8, 8):
        raise ValueError(f"model {name} takes 1x8x8 images, the data has {input_shape}")
    if name.startswith("mnist-cnn") and tuple(input_shape[1:]) != (28, 28):
        raise ValueError(f"model {name} takes 28x28 images, the data has {input_shape}")
    return MODELS[name](num_classes, input_shape)
