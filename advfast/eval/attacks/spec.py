"""What the evaluation knows about an attack: an :class:`AttackSpec` (name, label, cost, run, default settings,
family), the call every attack's ``run`` takes, and what it returns."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor

from advfast.checks import check_count, is_integer, is_real

Model = Callable[[Tensor], Tensor]
Settings = Mapping[str, Any]
# "single-step": one gradient step (FGSM); "gradient": iterative gradient attacks; "gradient-free": queries only;
# "ensemble": runs other attacks in turn on the points still robust (the worst case per point).
Family = Literal["single-step", "gradient", "gradient-free", "ensemble"]


@dataclass
class AttackOutput:
    """What an attack's ``run`` returns for a batch of B points.

    ``x_adv`` [B, ...]: the adversarial inputs (x itself where nothing was found). Ensembles also return
    ``broken_by`` [B] int8, the index in ``stages`` of the stage that broke each point (stage 0 is "clean": the
    point was misclassified to begin with; -1: never broken), and ``seconds`` per stage.
    """

    x_adv: Tensor
    stages: list[str] | None = None
    broken_by: Tensor | None = None
    seconds: dict[str, float] = field(default_factory=dict)


# run(model, x [B, ...], y [B], *, eps, norm, bounds, seed, settings) -> AttackOutput. ``seed`` seeds the
# attack's random draws for this batch (a torch.Generator on x's device, made by the attack).
AttackRun = Callable[..., AttackOutput]


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the registry (:data:`advfast.eval.attacks.ATTACKS`).

    Attributes:
        name: the name users pass (``--attack NAME``), e.g. ``"apgd-ce"``.
        label: settings -> the name a table or plot shows, e.g. ``"PGD-40 x3"``.
        cost: settings -> model evaluations per point at most (a forward, or a forward and an input-gradient
            backward), the unit of progress bars; attacks that stop early or compact spend less.
        run: the attack on one batch (see :data:`AttackRun`).
        defaults: every setting and its default; settings outside it are refused.
        family: which gradient-masking checks the attack takes part in (see :data:`Family`).
        summary: one line for ``--help`` and reports.
    """

    name: str
    label: Callable[[Settings], str]
    cost: Callable[[Settings], int]
    run: AttackRun
    defaults: Mapping[str, Any]
    family: Family
    summary: str

    def settings(self, given: Settings | None = None) -> dict[str, Any]:
        """The defaults updated with ``given``, checked: unknown names and values of the wrong type or range
        raise ``ValueError`` naming the attack and the setting."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise ValueError(f"{self.name} settings: unknown {unknown}; it takes {sorted(self.defaults)}")
        merged = {**self.defaults, **given}
        for key, default in self.defaults.items():
            merged[key] = _checked(self.name, key, merged[key], default)
        return merged


def _checked(attack: str, key: str, value: Any, default: Any) -> Any:
    """A setting of the default's type: counts (int) >= 1, fractions (float) in (0, 1], flags (bool), names
    (str), lists of names (tuple)."""
    where = f"{attack} settings: {key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be True or False, got {value!r}")
        return value
    if isinstance(default, int):
        if not is_integer(value):
            raise ValueError(f"{where} must be an integer >= 1, got {value!r}")
        return check_count(where, value)
    if isinstance(default, float):
        if not is_real(value) or not 0.0 < float(value) <= 1.0:
            raise ValueError(f"{where} must be a number in (0, 1], got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
        return value
    if isinstance(default, tuple):
        if isinstance(value, str) or not all(isinstance(v, str) for v in value) or not value:
            raise ValueError(f"{where} must be a non-empty list of attack names, got {value!r}")
        return tuple(value)
    raise TypeError(f"{where}: unsupported default {default!r}")
