"""Gradient-masking sanity checks (Athalye et al., 2018; Carlini et al., 2019, "On Evaluating Adversarial
Robustness", section 5): symptoms of an attack that fails for lack of a useful gradient rather than because
the model is robust.

Each check compares accuracies measured by :func:`advfast.eval.evaluate_robustness`; accuracy ``a`` "rises
above" ``b`` when ``a > b + tol`` with ``tol = max(0.5 percentage points, 1 / N)`` (N samples: one sample's
worth on small sets), so the noise of random starts and rounding does not raise false alarms:

- ``monotone_in_eps``: for each attack, accuracy does not rise with eps; clean accuracy is the eps = 0 point
  and every accuracy is compared with the lowest one at any smaller eps.
- ``fgsm_not_below_pgd``: at each eps, FGSM (one step) is not more successful than PGD (many steps).
- ``monotone_in_steps``: at the largest eps, PGD with twice the steps (of half the size: pgd's default step
  ``2.5 * eps / steps``), from the same random starts, is not less successful. A finer search of the same
  ball should find at least what the coarser one found; when it does not, the loss surface the gradient
  follows is erratic (shattered or stochastic gradients). Not a strict invariant, hence the tolerance.
- ``monotone_in_restarts``: at the largest eps, PGD with twice the restarts is not less successful. Its
  first restart repeats the base run (same seeds) and restarts keep every sample fooled, so only a
  nondeterministic model or a broken attack can fail this one.
- ``unbounded_reaches_chance``: PGD with an unbounded eps (the whole valid range: ``hi - lo`` in L-inf,
  ``(hi - lo) * sqrt(D)`` in L2 for D input values), started at the clean input so that only the gradient
  can move it, brings accuracy to chance ``1 / C`` or below.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from advfast.eval.result import RobustnessResult

TOLERANCE_POINTS = 0.005  # half a percentage point

CHECKS: dict[str, str] = {
    "monotone_in_eps": "accuracy does not rise with eps (clean accuracy is the eps = 0 point)",
    "fgsm_not_below_pgd": "FGSM accuracy is not below PGD accuracy at the same eps",
    "monotone_in_steps": "PGD with twice the steps is not more accurate (largest eps)",
    "monotone_in_restarts": "PGD with twice the restarts is not more accurate (largest eps)",
    "unbounded_reaches_chance": "PGD with an unbounded eps, from the clean input, reaches chance accuracy",
}

_CAUSE = "a sign of gradient masking (Athalye et al., 2018) or of a broken attack"


class GradientMaskingWarning(UserWarning):
    """A gradient-masking sanity check failed: the robust accuracy measured may be an overestimate."""


@dataclass(frozen=True)
class SanityWarning:
    """A failed check: its name (a key of :data:`CHECKS`) and what was measured."""

    check: str
    message: str

    def __str__(self) -> str:
        return f"{self.check}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"check": self.check, "message": self.message}


def tolerance(num_samples: int) -> float:
    """``max(0.005, 1 / N)``: half a percentage point, or one sample's worth of accuracy if that is more."""
    return max(TOLERANCE_POINTS, 1.0 / max(num_samples, 1))


def applicable_checks(result: RobustnessResult) -> list[str]:
    """The names of the checks that ``result`` holds the measurements for."""
    names = ["monotone_in_eps"]
    if "fgsm" in result.accuracy and "pgd" in result.accuracy:
        names.append("fgsm_not_below_pgd")
    runs = result.sanity_runs
    for name, run in (("monotone_in_steps", "more_steps"), ("monotone_in_restarts", "more_restarts")):
        if "pgd" in runs and run in runs:
            names.append(name)
    if "unbounded" in runs:
        names.append("unbounded_reaches_chance")
    return names


def check_gradient_masking(result: RobustnessResult, *, emit: bool = True, stacklevel: int = 2) -> list[SanityWarning]:
    """Runs every applicable check on ``result``; returns the failures and, when ``emit``, also issues each
    as a :class:`GradientMaskingWarning` through :func:`warnings.warn` (``stacklevel`` as there, counted from
    this function: 2 points at its caller)."""
    tol = tolerance(result.num_samples)
    found: list[SanityWarning] = []
    for name in applicable_checks(result):
        found += _CHECK_FUNCTIONS[name](result, tol)
    if emit:
        for warning in found:
            warnings.warn(str(warning), GradientMaskingWarning, stacklevel=stacklevel)
    return found


def _points(value: float) -> str:
    return f"{100 * value:.1f}%"


def _tol_text(tol: float) -> str:
    return f"tolerance {100 * tol:.2f} percentage points"


def _monotone_in_eps(result: RobustnessResult, tol: float) -> list[SanityWarning]:
    found = []
    for attack, accuracies in result.accuracy.items():
        # (where, accuracy) with increasing eps; each point is compared with the lowest point before it.
        series = [("clean", result.clean_accuracy)]
        series += [(f"eps={eps:g}", acc) for eps, acc in zip(result.eps, accuracies, strict=True)]
        lowest = series[0]
        worst: tuple[float, tuple[str, float], tuple[str, float]] | None = None
        for point in series[1:]:
            rise = point[1] - lowest[1]
            if rise > tol and (worst is None or rise > worst[0]):
                worst = (rise, point, lowest)
            if point[1] < lowest[1]:
                lowest = point
        if worst is not None:
            _, (high_at, high), (low_at, low) = worst
            found.append(
                SanityWarning(
                    "monotone_in_eps",
                    f"{attack} accuracy rises with eps: {_points(high)} at {high_at} but {_points(low)} at "
                    f"{low_at} ({_tol_text(tol)}); a stronger adversary should never do worse, {_CAUSE}",
                )
            )
    return found


def _fgsm_not_below_pgd(result: RobustnessResult, tol: float) -> list[SanityWarning]:
    fgsm, pgd = result.accuracy["fgsm"], result.accuracy["pgd"]
    below = [(eps, f, p) for eps, f, p in zip(result.eps, fgsm, pgd, strict=True) if f < p - tol]
    if not below:
        return []
    details = ", ".join(f"eps={eps:g}: FGSM {_points(f)} < PGD {_points(p)}" for eps, f, p in below)
    return [
        SanityWarning(
            "fgsm_not_below_pgd",
            f"the one-step attack beats the iterative one ({details}; {_tol_text(tol)}); iterating should "
            f"only help, {_CAUSE}",
        )
    ]


def _stronger_pgd(check: str, run_name: str, what: str) -> Callable[[RobustnessResult, float], list[SanityWarning]]:
    def run_check(result: RobustnessResult, tol: float) -> list[SanityWarning]:
        base, stronger = result.sanity_runs["pgd"], result.sanity_runs[run_name]
        if stronger.accuracy <= base.accuracy + tol:
            return []
        escaped = int(((base.predictions != result.labels) & (stronger.predictions == result.labels)).sum())
        return [
            SanityWarning(
                check,
                f"PGD with {what} ({stronger.steps} steps, {stronger.restarts} restarts) is more accurate at "
                f"eps={base.eps:g}: {_points(stronger.accuracy)} against {_points(base.accuracy)} with "
                f"{base.steps} steps, {base.restarts} restarts ({escaped} samples fooled by the weaker "
                f"attack escape the stronger; {_tol_text(tol)}), {_CAUSE}",
            )
        ]

    return run_check


def _unbounded_reaches_chance(result: RobustnessResult, tol: float) -> list[SanityWarning]:
    run = result.sanity_runs["unbounded"]
    chance = result.chance_accuracy
    if run.accuracy <= chance + tol:
        return []
    return [
        SanityWarning(
            "unbounded_reaches_chance",
            f"PGD-{run.steps} with an unbounded eps={run.eps:g} ({result.norm}, the whole input range), "
            f"started at the clean input, leaves {_points(run.accuracy)} accuracy, above chance "
            f"{_points(chance)} ({_tol_text(tol)}); an adversary that may output any input must fool the "
            f"model, so the input gradient is not leading the attack: {_CAUSE}",
        )
    ]


_CHECK_FUNCTIONS = {
    "monotone_in_eps": _monotone_in_eps,
    "fgsm_not_below_pgd": _fgsm_not_below_pgd,
    "monotone_in_steps": _stronger_pgd("monotone_in_steps", "more_steps", "twice the steps"),
    "monotone_in_restarts": _stronger_pgd("monotone_in_restarts", "more_restarts", "twice the restarts"),
    "unbounded_reaches_chance": _unbounded_reaches_chance,
}
