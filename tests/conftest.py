"""Session-wide settings and fixtures: hypothesis profiles, and the digits data and model that several test
modules share (trained once per session)."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Kernel tests draw a seed and build tensors from it with torch, so examples are cheap but not instant.
settings.register_profile(
    "default", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow], derandomize=False
)
# CI (.ci/test selects it): more examples, and a fixed derivation so a red run can be replayed.
settings.register_profile(
    "ci", deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def digits_data():
    """scikit-learn's digits split train / validation / test (seed 0)."""
    from advfast.data import digits_splits

    return digits_splits(seed=0)


@pytest.fixture(scope="session")
def digits_model():
    """A digits CNN trained normally (15 epochs), and the held-out test images: (model in eval mode, x, y).
    Tests must leave it as they found it (the attacks guarantee that; tests that change it take a copy)."""
    from advfast.data import load_digits
    from advfast.demo import train_classifier
    from advfast.models import digits_cnn

    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = load_digits(seed=0)
    model = train_classifier(digits_cnn(), x_train, y_train, epochs=15, seed=0)
    return model, x_test, y_test
