"""The reference networks: each builds for its input shape and class count, and refuses the wrong shape."""

from __future__ import annotations

import pytest
import torch

from advfast.models import MODELS, build_model, default_model_name


@pytest.mark.parametrize(
    ("name", "shape", "parameters"),
    [
        ("digits-cnn", (1, 8, 8), (50_000, 55_000)),
        ("mnist-cnn", (1, 28, 28), (800_000, 900_000)),
        ("mnist-cnn-small", (1, 28, 28), (150_000, 200_000)),
        ("cnn", (3, 32, 32), (90_000, 100_000)),
        ("cnn", (3, 30, 17), (90_000, 100_000)),
    ],
)
def test_each_model_gives_logits_for_its_input(name, shape, parameters):
    model = build_model(name, 7, shape).eval()
    logits = model(torch.rand(3, *shape))
    assert logits.shape == (3, 7) and torch.isfinite(logits).all()
    count = sum(p.numel() for p in model.parameters())
    assert parameters[0] <= count <= parameters[1], count


def test_the_default_model_follows_the_input_size():
    assert default_model_name((1, 8, 8)) == "digits-cnn"
    assert default_model_name((1, 28, 28)) == "mnist-cnn"
    assert default_model_name((3, 32, 32)) == "cnn"
    assert set(MODELS) == {"digits-cnn", "mnist-cnn", "mnist-cnn-small", "cnn"}


@pytest.mark.parametrize(
    ("name", "shape", "message"),
    [
        ("digits-cnn", (1, 28, 28), "takes 1x8x8 images"),
        ("mnist-cnn", (1, 8, 8), "takes 28x28 images"),
        ("resnet", (3, 32, 32), "model must be one of"),
    ],
)
def test_wrong_input_or_name_is_refused(name, shape, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, 10, shape)
