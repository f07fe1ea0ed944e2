"""APGD-T (Croce & Hein, 2020): Auto-PGD on the targeted DLR loss towards each of the ``targets`` most likely
other classes in turn, the second attack of AutoAttack (standard version: 9 targets, 100 iterations, 1
restart); see :mod:`advfast.attacks.apgd`."""

from __future__ import annotations

import torch

from advfast.attacks import apgd_targeted
from advfast.eval.attacks.spec import AttackOutput, AttackSpec


def _run(model, x, y, *, eps, norm, bounds, seed, settings) -> AttackOutput:
    generator = torch.Generator(device=x.device).manual_seed(seed)
    x_adv = apgd_targeted(
        model, x, y, eps=eps, norm=norm, steps=settings["steps"], targets=settings["targets"],
        restarts=settings["restarts"], bounds=bounds, generator=generator,
    )  # fmt: skip
    return AttackOutput(x_adv)


def _label(settings) -> str:
    steps = "" if settings["steps"] == 100 else f"-{settings['steps']}"
    targets = "" if settings["targets"] == 9 else f" ({settings['targets']} targets)"
    restarts = f" x{settings['restarts']}" if settings["restarts"] > 1 else ""
    return f"APGD-T{steps}{targets}{restarts}"


SPEC = AttackSpec(
    name="apgd-t",
    label=_label,
    cost=lambda settings: (settings["steps"] + 1) * settings["targets"] * settings["restarts"],
    run=_run,
    defaults={"steps": 100, "targets": 9, "restarts": 1},
    family="gradient",
    summary="Auto-PGD on the targeted DLR loss, each of the top-k other classes in turn (AutoAttack's second)",
)
