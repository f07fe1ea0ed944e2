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

EPS = 0.05
# Where the session's digits model keeps about 60% of 120 correct points under the three attacks (0.95 at 0.05).
AUTOATTACK_EPS = 0.1


@pytest.fixture(scope="module")
def correct_digits(digits_model):
    model, x, y = digits_model
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    return model, x[ok], y[ok]


@pytest.mark.parametrize(("norm", "eps"), [("linf", EPS), ("l2", 0.5)])
def test_square_equals_the_reference_draw_for_draw(correct_digits, norm, eps) -> None:
    """Seeded alike, advfast's Square makes the reference's draws and decisions: the same points fooled, and the
    same inputs bit for bit for nearly every point. Not for all: a proposal that does not change the logits
    (a pixel the model ignores) ties with the current margin, and the reference's re-evaluation in another batch
    shape can break the tie by a rounding, where advfast does not re-ask a query it knows the answer to."""
    from pyautoattack.square import SquareAttack

    model, x, y = correct_digits
    x, y = x[:48], y[:48]
    ours = square(model, x, y, eps=eps, norm=norm, queries=300, generator=torch.Generator().manual_seed(0))
    reference = SquareAttack(
        model, p_init=0.8, n_queries=300, eps=eps, norm={"linf": "Linf", "l2": "L2"}[norm], n_restarts=1, seed=0,
        device="cpu", resc_schedule=False,
    )  # fmt: skip
    reference.init_hyperparam(x)
    torch.manual_seed(0)
    with torch.no_grad():
        _, theirs = reference.attack_single_run(x, y)
    with torch.no_grad():
        assert torch.equal(model(ours).argmax(1) != y, model(theirs).argmax(1) != y)
    same = (ours == theirs).flatten(1).all(dim=1)
    assert float(same.double().mean()) >= 0.9, f"{int((~same).sum())} of {len(y)} points differ"


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
