"""Published reference numbers, to print and plot beside the measured ones.

A ``published`` mapping holds accuracies as fractions in [0, 1]: an optional ``"source"`` (a citation),
an optional ``"clean"`` accuracy, and per attack name a mapping eps -> accuracy (eps as a number, or as a
string such as JSON keys are), e.g.::

    {"source": "Madry et al. 2018, Table 2", "clean": 0.873, "pgd": {8 / 255: 0.458}, "fgsm": {8 / 255: 0.56}}

Attack names the evaluation did not run (e.g. ``"autoattack"``) are kept and listed on their own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

Published = Mapping[str, Any]


def check_published(published: Published | None) -> dict[str, Any]:
    """``published`` with eps keys as floats and accuracies as floats, checked: raises ValueError naming
    ``published`` for a value that is not an accuracy in [0, 1] (a percentage, say) or an eps < 0."""
    if published is None:
        return {}
    if not isinstance(published, Mapping):
        raise ValueError(f"published must be a mapping, got {type(published).__name__}")
    checked: dict[str, Any] = {}
    for key, value in published.items():
        if key == "source":
            checked[key] = str(value)
        elif key == "clean":
            checked[key] = _accuracy(value, "published['clean']")
        elif isinstance(value, Mapping):
            points = {}
            for eps, acc in value.items():
                radius = _eps(eps, key)
                points[radius] = _accuracy(acc, f"published[{key!r}][{eps!r}]")
            checked[str(key)] = points
        else:
            raise ValueError(
                f"published[{key!r}] must map eps to accuracy (or the key be 'source' or 'clean'), got {value!r}"
            )
    return checked


def published_points(published: Mapping[str, Any], attack: str) -> list[tuple[float, float]]:
    """(eps, accuracy) published for ``attack``, by increasing eps (``published`` as checked)."""
    points = published.get(attack)
    return sorted(points.items()) if isinstance(points, Mapping) else []


def published_at(published: Mapping[str, Any], attack: str, eps: float) -> float | None:
    """The accuracy published for ``attack`` at ``eps`` (equal up to float rounding), else None."""
    for radius, acc in published_points(published, attack):
        if math.isclose(radius, eps, rel_tol=1e-6, abs_tol=1e-12):
            return acc
    return None


def published_json(published: Mapping[str, Any]) -> dict[str, Any]:
    """``published`` (as checked) with eps keys written as ``repr(float)`` strings, for JSON."""
    return {
        key: {repr(eps): acc for eps, acc in value.items()} if isinstance(value, Mapping) else value
        for key, value in published.items()
    }


def _accuracy(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be an accuracy as a fraction in [0, 1], got {value!r}")
    return float(value)


def _eps(value: object, attack: str) -> float:
    try:
        radius = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        radius = math.nan
    if isinstance(value, bool) or not math.isfinite(radius) or radius < 0:
        raise ValueError(f"published[{attack!r}] must be keyed by eps >= 0, got {value!r}")
    return radius


# ---- the anchors reports print beside a run's own numbers ------------------------------------------------

# MNIST, eps = 0.3 (L-inf, inputs in [0, 1]), by training method.
MNIST_ANCHORS: dict[str, dict[str, Any]] = {
    "pgd": {"source": "Madry et al. 2018 (MNIST challenge model), PGD-100 with restarts; AutoAttack: Croce & Hein "
                      "2020, Table 2", "clean": 0.985, "pgd": {0.3: 0.896}, "autoattack": {0.3: 0.8850}},
    "fgsm-rs": {"source": "Wong et al. 2020, Table 5 (PGD-50, 10 restarts); AutoAttack: Croce & Hein 2020, Table 2",
                "clean": 0.985, "pgd": {0.3: 0.888}, "autoattack": {0.3: 0.8293}},
    "trades": {"source": "Zhang et al. 2019, SmallCNN (PGD-40); AutoAttack: Croce & Hein 2020, Table 2",
               "clean": 0.995, "pgd": {0.3: 0.961}, "autoattack": {0.3: 0.9281}},
}  # fmt: skip


def published_for(data: str, method: str, eps: float, norm: str) -> dict[str, Any] | None:
    """The published anchor for a run of ``method`` on the data set ``data`` at ``eps``, if there is one."""
    if data == "mnist" and norm == "linf" and math.isclose(eps, 0.3):
        return MNIST_ANCHORS.get(method)
    return None
