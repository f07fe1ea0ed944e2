"""APGD-CE (Croce & Hein, 2020): Auto-PGD on the cross-entropy, the first attack of AutoAttack (standard
version: 100 iterations, 1 restart); see :mod:`advfast.attacks.apgd`."""

from __future__ import annotations

import torch

from advfast.attacks import apgd
from advfast.eval.attacks.spec import AttackOutput, AttackSpec


def _run(model, x, y, *, eps, norm, bounds, seed, settings) -> AttackOutput:
    generator = torch.Generator(device=x.device).manual_seed(seed)
    x_adv = apgd(
        model, x, y, eps=eps, norm=norm, steps=settings["steps"], restarts=settings["restarts"], loss="ce",
        bounds=bounds, generator=generator,
    )  # fmt: skip
    return AttackOutput(x_adv)


def _label(settings) -> str:
    steps = "" if settings["steps"] == 100 else f"-{settings['steps']}"
    restarts = f" x{settings['restarts']}" if settings["restarts"] > 1 else ""
    return f"APGD-CE{steps}{restarts}"


SPEC = AttackSpec(
    name="apgd-ce",
    label=_label,
    cost=lambda settings: (settings["steps"] + 1) * settings["restarts"],
    run=_run,
    defaults={"steps": 100, "restarts": 1},
    family="gradient",
    summary="Auto-PGD on the cross-entropy (AutoAttack's first attack)",
)
