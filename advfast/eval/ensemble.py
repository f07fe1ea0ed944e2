"""Attacks run in turn on the points still robust, keeping the worst case per point (AutoAttack's scheme,
Croce & Hein 2020): a point broken by an earlier attack leaves, so an evaluation costs in proportion to what is
still robust."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from advfast.attacks import preserved_model_state
from advfast.eval.attacks.spec import AttackSpec, Model

CLEAN = "clean"  # stage 0: the points the model misclassifies without any attack


@dataclass
class EnsembleResult:
    """Per point and per stage. ``stages`` is ``["clean", attack names...]``; after stage j the robust accuracy
    is ``accuracy[stages[j]]`` (the fraction of all N points correctly classified on every input tried so far).

    Attributes:
        robust: [N] bool, correctly classified after every stage.
        broken_by: [N] int8, the stage that broke each point (0: misclassified clean), -1 for robust points.
        x_adv: [N, ...] the worst case per point: the adversarial input of the stage that broke it; for robust
            points the last stage's output (its best attempt); x for points misclassified clean. On x's device.
        accuracy: stage name -> robust accuracy after it. seconds: stage name -> wall time.
        points: stage name -> how many points it attacked (the points still robust when it started).
        settings: stage name -> its settings.
    """

    stages: list[str]
    robust: Tensor
    broken_by: Tensor
    x_adv: Tensor
    accuracy: dict[str, float]
    seconds: dict[str, float]
    points: dict[str, int]
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)


def run_ensemble(
    model: Model,
    x: Tensor,
    y: Tensor,
    stages: Sequence[tuple[AttackSpec, dict[str, Any]]],
    *,
    eps: float,
    norm: str,
    bounds: tuple[float, float],
    seed: int,
    batch_size: int,
    device: torch.device,
) -> EnsembleResult:
    """Clean predictions, then each attack of ``stages`` (spec, settings) on the points still robust, in chunks
    of ``batch_size`` moved to ``device``; a point leaves as soon as an attack's output misclassifies it. Every
    chunk of every stage draws from ``seed`` itself, as the reference AutoAttack reseeds each attack and batch."""
    n = x.shape[0]
    names = [CLEAN] + [spec.name for spec, _ in stages]
    tick = time.perf_counter()
    predicted = _predict(model, x, batch_size, device)
    robust = predicted == y.cpu()  # bookkeeping on the CPU; x_adv stays where x is
    broken_by = torch.where(robust, -1, 0).to(torch.int8)
    x_adv = x.clone()
    accuracy = {CLEAN: robust.double().mean().item()}
    seconds = {CLEAN: time.perf_counter() - tick}
    points = {CLEAN: n}
    for index, (spec, settings) in enumerate(stages, start=1):
        tick = time.perf_counter()
        todo = robust.nonzero().squeeze(1)
        points[spec.name] = int(todo.numel())
        for chunk in todo.split(batch_size) if todo.numel() else ():
            on_x = chunk.to(x.device)
            xb, yb = x[on_x].to(device), y[on_x].to(device)
            out = spec.run(model, xb, yb, eps=eps, norm=norm, bounds=bounds, seed=seed, settings=settings)
            hit = _predict(model, out.x_adv, batch_size, device) != yb.cpu()
            # Broken points keep this stage's input; robust ones hold the latest attempt until a later stage.
            x_adv[on_x] = out.x_adv.to(x_adv.device, x_adv.dtype)
            where = chunk[hit]
            robust[where] = False
            broken_by[where] = index
        accuracy[spec.name] = robust.double().mean().item()
        seconds[spec.name] = time.perf_counter() - tick
    return EnsembleResult(
        stages=names, robust=robust, broken_by=broken_by, x_adv=x_adv, accuracy=accuracy, seconds=seconds,
        points=points, settings={spec.name: dict(settings) for spec, settings in stages},
    )  # fmt: skip


def _predict(model: Model, x: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """argmax of the logits [N] (int64, CPU), in eval mode without gradients, ``batch_size`` at a time."""
    out = torch.empty(x.shape[0], dtype=torch.int64)
    with preserved_model_state(model, "eval"), torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            out[start : start + batch_size] = model(x[start : start + batch_size].to(device)).argmax(dim=1).cpu()
    return out
