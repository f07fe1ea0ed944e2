"""advfast's APGD, Square and autoattack against the reference AutoAttack code (fra31/auto-attack, packaged as
``pyautoattack==0.2.0``, an optional test dependency: ``pip install --no-deps pyautoattack==0.2.0``), on the
digits CNN trained once per session. Skips where the reference is not installed."""

from __future__ import annotations

import logging

import pytest
import torch

from advfast.attacks import square
from advfast.eval import autoattack

pyautoattack = pytest.importorskip(
    "pyautoattack", reason="the reference AutoAttack is not installed: pip install --no-deps pyautoattack==0.2.0"
)

# Where the session's digits model keeps about 60% of 120 correct points under the three attacks (0.95 at 0.05).
AUTOATTACK_EPS = 0.1


@pytest.fixture(scope="module")
def correct_digits(digits_model):
    model, x, y = digits_model
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    return model, x[ok], y[ok]


class OneAtATime(torch.nn.Module):
    """The model evaluated one sample at a time, so an input's logits never depend on the batch it came in.
    The two implementations send different batches (advfast leaves out the samples whose answer it knows), and a
    batched convolution's rounding depends on the batch's shape; a proposal that moves the margin by less than
    that rounding (a pixel the model barely uses) would then be a tie that each side breaks its own way."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.model(x[i : i + 1]) for i in range(len(x))])


@pytest.mark.parametrize(("norm", "eps"), [("linf", AUTOATTACK_EPS), ("l2", 0.5)])
def test_square_equals_the_reference_draw_for_draw(correct_digits, norm, eps) -> None:
    """Seeded alike, advfast's Square makes the reference's draws and decisions: on a model whose logits do not
    depend on the batch, the same input bit for bit for every point, fooled or not."""
    from pyautoattack.square import SquareAttack

    model, x, y = correct_digits
    model, x, y = OneAtATime(model), x[:48], y[:48]
    ours = square(model, x, y, eps=eps, norm=norm, queries=300, generator=torch.Generator().manual_seed(0))
    reference = SquareAttack(
        model, p_init=0.8, n_queries=300, eps=eps, norm={"linf": "Linf", "l2": "L2"}[norm], n_restarts=1, seed=0,
        device="cpu", resc_schedule=False,
    )  # fmt: skip
    reference.init_hyperparam(x)
    torch.manual_seed(0)
    with torch.no_grad():
        _, theirs = reference.attack_single_run(x, y)
    differ = (ours != theirs).flatten(1).any(dim=1)
    assert not differ.any(), f"points {differ.nonzero().flatten().tolist()} of {len(y)} differ"
    with torch.no_grad():
        fooled = int((model(ours).argmax(1) != y).sum())
    assert 0 < fooled < len(y), "the radius should leave a mix of fooled and robust points"


def test_autoattack_agrees_with_the_reference(correct_digits) -> None:
    """advfast's autoattack against the reference running the same three attacks (APGD-CE, APGD-T, Square; its
    "custom" version, Square at 500 queries to fit CI) on 120 digits the model classifies correctly: the same
    robust accuracy within one point's worth, never above. The standard version with FAB-T at 5,000 queries on
    1,000 MNIST images is benchmarks/agreement_autoattack.py's measurement (README)."""
    from pyautoattack import AutoAttack

    model, x, y = correct_digits
    x, y = x[:120], y[:120]
    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    reference = AutoAttack(model, norm="Linf", eps=AUTOATTACK_EPS, version="custom",
                           attacks=["apgd-ce", "apgd-t", "square"], device="cpu", seed=0)  # fmt: skip
    # The standard version's stage settings ("custom" keeps the constructor's 5 APGD-CE restarts), Square shortened.
    reference.apgd.n_restarts = 1
    reference.apgd_targeted.n_restarts = 1
    reference.apgd_targeted.n_target_classes = 9
    reference.square.n_queries = 500
    _, y_adv = reference.run_standard_evaluation(x, y, batch_size=250)
    theirs = (y_adv == y).double().mean().item()
    ours = autoattack(model, x, y, eps=AUTOATTACK_EPS, batch_size=250, seed=0, settings={"square": {"queries": 500}})
    assert 0.1 < theirs < 0.9, "the radius should leave a mix of robust and broken points"
    tolerance = 1 / len(y)
    assert ours.accuracy["square"] <= theirs + tolerance
    assert abs(ours.accuracy["square"] - theirs) <= tolerance
