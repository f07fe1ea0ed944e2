"""PGD-K (Madry et al., 2018): ``steps`` steps of 2.5 eps / steps from a random start, ``restarts`` restarts,
early stop (a point once fooled stays fooled), on advfast's fused step kernels."""

from __future__ import annotations

import torch

from advfast.attacks import pgd
from advfast.eval.attacks.spec import AttackOutput, AttackSpec


def _run(model, x, y, *, eps, norm, bounds, seed, settings) -> AttackOutput:
    generator = torch.Generator(device=x.device).manual_seed(seed)
    x_adv = pgd(
        model, x, y, eps=eps, steps=settings["steps"], norm=norm, random_start=settings["random_start"],
        restarts=settings["restarts"], early_stop=True, bounds=bounds, generator=generator,
    )  # fmt: skip
    return AttackOutput(x_adv)


def _label(settings) -> str:
    restarts = f" x{settings['restarts']}" if settings["restarts"] > 1 else ""
    return f"PGD-{settings['steps']}{restarts}"


SPEC = AttackSpec(
    name="pgd",
    label=_label,
    cost=lambda settings: settings["steps"] * settings["restarts"],
    run=_run,
    defaults={"steps": 40, "restarts": 1, "random_start": True},
    family="gradient",
    summary="PGD-K from a random start (steps of 2.5 eps / K), restarts, early stop",
)
