"""The attack registry of the evaluation: every attack ``advfast eval``, ``advfast attack`` and the training
report can run, by name. Each attack is an :class:`AttackSpec` in a file of its own; adding one is adding a file
and a line to :data:`ATTACKS`."""

from __future__ import annotations

from advfast.eval.attacks import apgd_ce, apgd_t, autoattack, fgsm, pgd, square
from advfast.eval.attacks.spec import AttackOutput, AttackSpec, Family, Settings

ATTACKS: dict[str, AttackSpec] = {
    spec.name: spec for spec in (fgsm.SPEC, pgd.SPEC, apgd_ce.SPEC, apgd_t.SPEC, square.SPEC, autoattack.SPEC)
}


def get_attack(name: str) -> AttackSpec:
    """The registered attack ``name``; ``ValueError`` naming the known ones otherwise."""
    if not isinstance(name, str) or name not in ATTACKS:
        raise ValueError(f"attack must be one of {list(ATTACKS)}, got {name!r}")
    return ATTACKS[name]


__all__ = ["ATTACKS", "AttackOutput", "AttackSpec", "Family", "Settings", "get_attack"]
