"""``advfast.eval.autoattack``: the robust accuracy AutoAttack (Croce & Hein, 2020) reports, on advfast's APGD
and Square."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import torch
from torch import Tensor

from advfast.attacks.validation import check_bounds, check_norm
from advfast.checks import check_count, is_integer
from advfast.eval.attacks import get_attack
from advfast.eval.attacks.autoattack import STANDARD, stage_specs
from advfast.eval.attacks.spec import Model
from advfast.eval.ensemble import EnsembleResult, run_ensemble
from advfast.eval.predict import model_device

AutoAttackResult = EnsembleResult


def autoattack(
    model: Model,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    attacks: Sequence[str] = STANDARD,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    batch_size: int = 250,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> AutoAttackResult:
    """AutoAttack's standard evaluation without FAB-T: APGD-CE (100 iterations), APGD-T (9 targets x 100
    iterations) and Square (5,000 queries), each run only on the points every earlier one left robust::

        robust_i = [f(x_i) = y_i] and [f(A_k(x_i)) = y_i for every attack k]
        robust accuracy = (1/N) sum_i robust_i

    Within an attack a point leaves the batch at the step or query that misclassifies it, so the cost is in
    proportion to what is still robust. Chunks of ``batch_size`` of the points still robust run on ``device``
    (default: the model's), each attack and chunk drawing from ``seed`` as the reference reseeds every attack
    and batch: with the same seed and batch size the random starts and Square's draws are the reference's.

    Args:
        model: maps x [N, ...] to logits [N, C] (C >= 4: APGD-T's targeted DLR loss); left as it was.
        x: inputs [N, C, H, W] (Square needs images) inside ``bounds``; y: int labels [N]. May live on the CPU
            while the model runs on a GPU.
        eps: the radius (L-inf or L2). norm: ``"linf"`` or ``"l2"``.
        attacks: the attacks in order (registry names; default the standard three).
        settings: per attack, settings to change from the standard version's (e.g. ``{"square": {"queries":
            1000}}``: a cheaper, weaker evaluation).
        bounds: the valid input range. batch_size: points per attack call. seed: for every random draw.

    Returns:
        an :class:`~advfast.eval.ensemble.EnsembleResult`: per point ``robust`` [N], ``broken_by`` [N] (the
        stage that broke it: 0 clean, 1 the first attack, ...; -1 robust) and ``x_adv`` [N, ...]; per stage the
        robust accuracy after it (``accuracy["clean"]`` first), seconds and the points it attacked.
    """
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.dim() < 1 or x.shape[0] == 0 or y.shape != (x.shape[0],):
        raise ValueError(f"x must be a batch [N, ...] with N >= 1 and y [N], got {tuple(x.shape)}, {tuple(y.shape)}")
    if isinstance(eps, bool) or not isinstance(eps, Real) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    norm = check_norm(norm)
    bounds = check_bounds(bounds)
    batch_size = check_count("batch_size", batch_size)
    if not is_integer(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if isinstance(attacks, str):
        attacks = [attacks]
    for name in attacks:
        get_attack(name)  # a clear error for an unknown name before any work
    stages = stage_specs({"stages": tuple(attacks)}, settings) if attacks else []
    if not stages:
        raise ValueError("attacks must name at least one attack")
    device = model_device(model) if device is None else torch.device(device)
    return run_ensemble(
        model, x, y, stages, eps=float(eps), norm=norm, bounds=bounds, seed=int(seed), batch_size=batch_size,
        device=device,
    )  # fmt: skip
