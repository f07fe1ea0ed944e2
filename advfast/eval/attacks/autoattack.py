"""AutoAttack (Croce & Hein, 2020), standard version without FAB-T: APGD-CE, then APGD-T, then Square, each on
the points still robust, the worst case per point (see :func:`advfast.eval.autoattack`). FAB-T, the reference's
third attack, is left out: on advfast's MNIST models it broke no point the others left robust (README)."""

from __future__ import annotations

from advfast.eval.attacks.spec import AttackOutput, AttackSpec
from advfast.eval.ensemble import run_ensemble

STANDARD = ("apgd-ce", "apgd-t", "square")


def stage_specs(settings, overrides=None) -> list:
    """(spec, settings) of each stage, from the registry, each at its defaults (the standard version's) updated
    by ``overrides[name]``."""
    from advfast.eval.attacks import get_attack

    overrides = dict(overrides or {})
    stray = sorted(set(overrides) - set(settings["stages"]))
    if stray:
        raise ValueError(f"settings name attacks that are not stages: {stray} (stages: {list(settings['stages'])})")
    stages = []
    for name in settings["stages"]:
        spec = get_attack(name)
        if spec.family == "ensemble":
            raise ValueError(f"autoattack settings: stages must be single attacks, got the ensemble {name!r}")
        stages.append((spec, spec.settings(overrides.get(name))))
    return stages


def _run(model, x, y, *, eps, norm, bounds, seed, settings) -> AttackOutput:
    result = run_ensemble(
        model, x, y, stage_specs(settings), eps=eps, norm=norm, bounds=bounds, seed=seed, batch_size=x.shape[0],
        device=x.device,
    )  # fmt: skip
    return AttackOutput(result.x_adv, stages=result.stages, broken_by=result.broken_by, seconds=result.seconds)


def _label(settings) -> str:
    stages = tuple(settings["stages"])
    return "AutoAttack" if stages == STANDARD else f"AutoAttack ({', '.join(stages)})"


def _cost(settings) -> int:
    return sum(spec.cost(stage_settings) for spec, stage_settings in stage_specs(settings))


SPEC = AttackSpec(
    name="autoattack",
    label=_label,
    cost=_cost,
    run=_run,
    defaults={"stages": STANDARD},
    family="ensemble",
    summary="APGD-CE, APGD-T, Square in turn on the points still robust (AutoAttack standard without FAB-T)",
)
