"""Gradient-masking sanity checks (Athalye et al., 2018; Carlini et al., 2019, "On Evaluating Adversarial
Robustness", section 5): symptoms of an attack that fails for lack of a useful gradient rather than because
the model is robust.

Each check compares accuracies measured by :func:`advfast.eval.evaluate_robustness`; accuracy ``a`` "rises
above" ``b`` when ``a > b + tol`` with ``tol = max(0.5 percentage points, 1 / N)`` (N samples: one sample's
worth on small sets), so the noise of random starts and rounding does not raise false alarms. Which attack
takes part in which check comes from its family in the attack registry (:mod:`advfast.eval.attacks`):

- ``monotone_in_eps``: for each attack, accuracy does not rise with eps; clean accuracy is the eps = 0 point
  and every accuracy is compared with the lowest one at any smaller eps.
- ``fgsm_not_below_strongest``: at each eps, a single-step attack (FGSM) is not more successful than the
  strongest of the other attacks evaluated (PGD, APGD, AutoAttack, ...): iterating should only help.
- ``gradient_free_not_stronger``: at each eps, a gradient-free attack (Square) does not beat the gradient
  attacks: run alone, its accuracy is not below the best gradient attack's; inside an ensemble, the
  gradient-free stage does not lower the accuracy the gradient stages left (the reference AutoAttack's own
  check). A black-box random search should not find what the gradient missed, unless the gradient misleads.
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

from advfast.eval.attacks import get_attack
from advfast.eval.formatting import percent
from advfast.eval.result import RobustnessResult, SanityWarning

TOLERANCE_POINTS = 0.005  # half a percentage point

CHECKS: dict[str, str] = {
    "monotone_in_eps": "accuracy does not rise with eps (clean accuracy is the eps = 0 point)",
    "fgsm_not_below_strongest": "FGSM accuracy is not below the strongest attack's at the same eps",
    "gradient_free_not_stronger": "a gradient-free attack (Square) does not beat the gradient attacks",
    "monotone_in_steps": "PGD with twice the steps is not more accurate (largest eps)",
    "monotone_in_restarts": "PGD with twice the restarts is not more accurate (largest eps)",
    "unbounded_reaches_chance": "PGD with an unbounded eps, from the clean input, reaches chance accuracy",
}

_CAUSE = "a sign of gradient masking (Athalye et al., 2018) or of a broken attack"


class GradientMaskingWarning(UserWarning):
    """A gradient-masking sanity check failed: the robust accuracy measured may be an overestimate."""


def tolerance(num_samples: int) -> float:
    """``max(0.005, 1 / N)``: half a percentage point, or one sample's worth of accuracy if that is more."""
    return max(TOLERANCE_POINTS, 1.0 / max(num_samples, 1))


def _family(name: str) -> str:
    return get_attack(name).family


def _gradient_free_cases(result: RobustnessResult) -> list[tuple[str, list[float], list[float]]]:
    """(what, gradient-free accuracies, gradient accuracies per eps) to compare: a gradient-free attack run
    alone against the best gradient attack run alone; an ensemble's gradient-free stage against the stage
    before it."""
    cases = []
    gradient = [result.accuracy[a] for a in result.attacks if _family(a) == "gradient"]
    for attack in result.attacks:
        if _family(attack) == "gradient-free" and gradient:
            best = [min(values) for values in zip(*gradient, strict=True)]
            cases.append((attack, result.accuracy[attack], best))
    for attack, record in result.stages.items():
        for j, stage in enumerate(record.stages[1:], start=1):
            earlier = record.stages[1:j]
            if _family(stage) == "gradient-free" and any(_family(s) == "gradient" for s in earlier):
                after = [a[stage] for a in record.accuracy]
                before = [a[record.stages[j - 1]] for a in record.accuracy]
                cases.append((f"{attack}'s {stage} stage", after, before))
    return cases


def applicable_checks(result: RobustnessResult) -> list[str]:
    """The names of the checks that ``result`` holds the measurements for."""
    names = ["monotone_in_eps"]
    families = [_family(a) for a in result.attacks]
    if "single-step" in families and any(f != "single-step" for f in families):
        names.append("fgsm_not_below_strongest")
    if _gradient_free_cases(result):
        names.append("gradient_free_not_stronger")
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
                    f"{attack} accuracy rises with eps: {percent(high)} at {high_at} but {percent(low)} at "
                    f"{low_at} ({_tol_text(tol)}); a stronger adversary should never do worse, {_CAUSE}",
                )
            )
    return found


def _fgsm_not_below_strongest(result: RobustnessResult, tol: float) -> list[SanityWarning]:
    others = [a for a in result.attacks if _family(a) != "single-step"]
    found = []
    for attack in (a for a in result.attacks if _family(a) == "single-step"):
        below = []
        for i, eps in enumerate(result.eps):
            strongest = min(others, key=lambda other: result.accuracy[other][i])
            single, best = result.accuracy[attack][i], result.accuracy[strongest][i]
            if single < best - tol:
                below.append(f"eps={eps:g}: {attack} {percent(single)} < {strongest} {percent(best)}")
        if below:
            found.append(
                SanityWarning(
                    "fgsm_not_below_strongest",
                    f"the one-step attack beats the strongest iterative one ({', '.join(below)}; {_tol_text(tol)}); "
                    f"iterating should only help, {_CAUSE}",
                )
            )
    return found


def _gradient_free_not_stronger(result: RobustnessResult, tol: float) -> list[SanityWarning]:
    found = []
    for what, free, gradient in _gradient_free_cases(result):
        below = [
            f"eps={eps:g}: {percent(f)} against {percent(g)}"
            for eps, f, g in zip(result.eps, free, gradient, strict=True)
            if f < g - tol
        ]
        if below:
            found.append(
                SanityWarning(
                    "gradient_free_not_stronger",
                    f"{what} (gradient-free) lowers the accuracy the gradient attacks left ({', '.join(below)}; "
                    f"{_tol_text(tol)}); random search finds what the gradient missed: {_CAUSE}",
                )
            )
    return found


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
                f"eps={base.eps:g}: {percent(stronger.accuracy)} against {percent(base.accuracy)} with "
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
            f"started at the clean input, leaves {percent(run.accuracy)} accuracy, above chance "
            f"{percent(chance)} ({_tol_text(tol)}); an adversary that may output any input must fool the "
            f"model, so the input gradient is not leading the attack: {_CAUSE}",
        )
    ]


_CHECK_FUNCTIONS = {
    "monotone_in_eps": _monotone_in_eps,
    "fgsm_not_below_strongest": _fgsm_not_below_strongest,
    "gradient_free_not_stronger": _gradient_free_not_stronger,
    "monotone_in_steps": _stronger_pgd("monotone_in_steps", "more_steps", "twice the steps"),
    "monotone_in_restarts": _stronger_pgd("monotone_in_restarts", "more_restarts", "twice the restarts"),
    "unbounded_reaches_chance": _unbounded_reaches_chance,
}
