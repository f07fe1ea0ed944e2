"""The Square attack (Andriushchenko et al., 2020): gradient-free random search of square windows, the last
attack of AutoAttack (standard version: 5,000 queries, p_init 0.8); see :mod:`advfast.attacks.square`."""

from __future__ import annotations

import torch

from advfast.attacks import square
from advfast.eval.attacks.spec import AttackOutput, AttackSpec


def _run(model, x, y, *, eps, norm, bounds, seed, settings) -> AttackOutput:
    generator = torch.Generator(device=x.device).manual_seed(seed)
    x_adv = square(
        model, x, y, eps=eps, norm=norm, queries=settings["queries"], p_init=settings["p_init"], bounds=bounds,
        generator=generator,
    )  # fmt: skip
    return AttackOutput(x_adv)


def _label(settings) -> str:
    return "Square" if settings["queries"] == 5000 else f"Square-{settings['queries']}"


SPEC = AttackSpec(
    name="square",
    label=_label,
    cost=lambda settings: settings["queries"] + 1,
    run=_run,
    defaults={"queries": 5000, "p_init": 0.8},
    family="gradient-free",
    summary="gradient-free random search over square windows (AutoAttack's last attack)",
)
