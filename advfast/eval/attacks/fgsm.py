"""FGSM (Goodfellow et al., 2015): one step of size eps from x, along the sign (L-inf) or the direction (L2) of
the loss gradient; the cheapest check, and the one a gradient-masked model fools."""

from __future__ import annotations

from advfast.attacks import fgsm
from advfast.eval.attacks.spec import AttackOutput, AttackSpec


def _run(model, x, y, *, eps, norm, bounds, seed, settings) -> AttackOutput:
    return AttackOutput(fgsm(model, x, y, eps=eps, norm=norm, bounds=bounds))


SPEC = AttackSpec(
    name="fgsm",
    label=lambda settings: "FGSM",
    cost=lambda settings: 1,
    run=_run,
    defaults={},
    family="single-step",
    summary="one gradient step of size eps from x",
)
