"""Clean and robust accuracy of a classifier over a data set, at several eps, under any attacks of the registry."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from advfast.attacks import preserved_model_state
from advfast.attacks.validation import check_bounds, check_logits, check_norm
from advfast.checks import check_count
from advfast.eval.attacks import ATTACKS, AttackSpec, get_attack
from advfast.eval.batches import EvalData, batches, sample_count
from advfast.eval.columns import Columns
from advfast.eval.metrics import accuracy, class_report
from advfast.eval.predict import model_device
from advfast.eval.progress import EvalProgress, batch_digest, model_digest
from advfast.eval.result import AttackRun, RobustnessResult, StageRecord
from advfast.eval.sanity import applicable_checks, check_gradient_masking
from advfast.runtime.seeds import derive_seed

Model = Callable[[Tensor], Tensor]

DEFAULT_ATTACKS = ("fgsm", "pgd")


@dataclass(frozen=True)
class _Run:
    """One attack configuration, run on every batch. ``eps`` None: unbounded (the whole input range)."""

    key: str  # "<attack>@<i>" for eps[i]; or a sanity run's name
    spec: AttackSpec
    settings: Mapping[str, Any] = field(hash=False)
    eps: float | None
    part: str  # where its time is counted: the attack, or "sanity"

    @property
    def label(self) -> str:
        """For the progress bar: "pgd eps=0.1", or the sanity run's name."""
        return self.key if "@" not in self.key else f"{self.spec.name} eps={self.eps:g}"

    @property
    def cost(self) -> int:
        return self.spec.cost(self.settings)


def evaluate_robustness(
    model: Model,
    data: EvalData,
    *,
    eps: Sequence[float],
    norm: str = "linf",
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    pgd_steps: int = 40,
    pgd_restarts: int = 1,
    bounds: tuple[float, float] = (0.0, 1.0),
    batch_size: int = 256,
    device: torch.device | str | None = None,
    seed: int = 0,
    progress: bool = True,
    sanity: bool = True,
    checkpoint: str | Path | None = None,
) -> RobustnessResult:
    """Clean accuracy, and robust accuracy under each attack at each eps::

        clean accuracy = (1/N) * sum_i [argmax f(x_i) == y_i]
        robust accuracy(attack, eps) = (1/N) * sum_i [argmax f(x'_i) == y_i],  x'_i = attack(f, x_i, y_i, eps)

    ``attacks`` are names of the attack registry (:data:`advfast.eval.attacks.ATTACKS`): ``"fgsm"``
    (:func:`advfast.fgsm`, one step of size eps from x), ``"pgd"`` (:func:`advfast.pgd` with ``pgd_steps`` steps
    of ``2.5 * eps / steps``, a random start, ``pgd_restarts`` restarts and early stop), ``"apgd-ce"``,
    ``"apgd-t"``, ``"square"`` and ``"autoattack"`` (APGD-CE, APGD-T and Square in turn on the points still
    robust; per-stage accuracies in ``result.stages``), each with its defaults updated by ``settings[name]``.
    Inputs are batched as :func:`advfast.eval.batches.batches` says and run on ``device`` (default: where the
    model's parameters are). The random draws of batch ``b`` (from 0) are seeded with ``derive_seed(seed, b)``
    (:mod:`advfast.runtime.seeds`), the same for every attack and eps: the same seed gives the same numbers, and
    the checks compare attacks on equal terms. Per-sample outputs go into preallocated tensors, so memory does
    not grow with the number of batches.

    With ``sanity``, PGD also runs at the largest eps with twice the steps and with twice the restarts, and
    with an unbounded eps from the clean input, and :func:`advfast.eval.sanity.check_gradient_masking`
    compares all the accuracies; each failed check is returned in ``result.warnings`` and issued as a
    :class:`advfast.eval.GradientMaskingWarning`.

    With ``checkpoint`` (a file path), the progress is written there atomically after every batch
    (:mod:`advfast.eval.progress`), and a later call with the same path, settings, weights and data skips the
    batches it holds: a killed evaluation resumes and gives the numbers an uninterrupted one gives. The file
    is left in place; the caller removes it once the result is safely written.

    Args:
        model: maps x [B, ...] to logits [B, C]; an ``nn.Module`` is run in eval mode and left as it was.
        data: a Dataset of (x, y), a DataLoader of (x, y) batches, or (x, y) tensors; y integer class labels.
        eps: the radii to evaluate, each finite and >= 0 (sorted, duplicates dropped, in the result).
        norm: ``"linf"`` or ``"l2"``. attacks: registry names, run in this order.
        settings: per attack name, settings to change (e.g. ``{"square": {"queries": 1000}}``); PGD's are
            ``pgd_steps`` and ``pgd_restarts`` (steps per restart and restarts, also the sanity runs' base).
        bounds: the valid input range. batch_size: samples per batch for a Dataset or tensors (a DataLoader
            keeps its own). seed: for the random draws. progress: a tqdm bar counting model evaluations.

    Returns:
        a :class:`RobustnessResult` with the accuracies, each attack's settings, per-class metrics (clean, and
        under the strongest attack at the largest eps), ensembles' stages, the sanity runs and warnings, seconds
        per part, and the per-sample predictions.
    """
    started = time.perf_counter()
    eps_list = _check_eps(eps)
    norm = check_norm(norm)
    attack_names = _check_attacks(attacks)
    pgd_steps = check_count("pgd_steps", pgd_steps)
    pgd_restarts = check_count("pgd_restarts", pgd_restarts)
    lo, hi = check_bounds(bounds)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    attack_settings = _check_settings(settings, attack_names, pgd_steps, pgd_restarts)
    batch_iter, num_batches = batches(data, batch_size)
    device = model_device(model) if device is None else torch.device(device)
    runs = _plan(eps_list, attack_names, attack_settings, pgd_steps, pgd_restarts, sanity)

    seconds = dict.fromkeys(["clean", *attack_names, *(["sanity"] if sanity else [])], 0.0)
    stage_seconds: dict[str, dict[str, float]] = {}
    stage_names: dict[str, list[str]] = {}
    columns = Columns(sample_count(data) or 1024)
    unbounded_eps = math.nan
    num_classes = 0
    done = 0
    earlier = 0.0  # seconds spent by the runs this one resumes
    saved = None
    if checkpoint is not None:
        fingerprint = {"eps": eps_list, "norm": norm, "attacks": attack_names, "settings": attack_settings,
                       "bounds": [lo, hi], "seed": seed, "batch_size": batch_size, "sanity": sanity,
                       "model": model_digest(model)}  # fmt: skip
        saved = EvalProgress(checkpoint, json.loads(json.dumps(fingerprint, default=repr)))
        if saved.load():
            done = saved.restore(columns)
            seconds.update(saved.state["seconds"])
            stage_seconds, stage_names = saved.state["stage_seconds"], saved.state["stage_names"]
            num_classes, unbounded_eps = saved.state["num_classes"], saved.state["unbounded_eps"]
            earlier = saved.state["elapsed"]

    def record(digest: str | None) -> None:
        """One more batch done: into the progress file, when there is one."""
        if saved is not None:
            state = _progress_state(seconds, stage_seconds, stage_names, num_classes, unbounded_eps,
                                    earlier + time.perf_counter() - started)  # fmt: skip
            saved.save(digest, state, columns, done)

    per_batch = 1 + sum(run.cost for run in runs)
    bar = tqdm(
        total=None if num_batches is None else num_batches * per_batch,
        desc="robust eval",
        unit="eval",
        disable=not progress,
    )
    with bar:
        for index, (x, y) in enumerate(batch_iter):
            digest = None if saved is None or x.shape[0] == 0 else batch_digest((x, y))
            if saved is not None and saved.skips(index, digest):
                bar.update(per_batch)
                continue
            if x.shape[0] == 0:
                record(None)
                continue
            x, y = x.to(device), _labels(y, x, index).to(device)
            tick = time.perf_counter()
            predicted, classes = _predict(model, x, y)
            if num_classes and classes != num_classes:
                raise ValueError(f"model returned {classes} logits for batch {index}, {num_classes} before")
            num_classes = classes
            columns.put("labels", done, y)
            columns.put("clean", done, predicted)
            seconds["clean"] += time.perf_counter() - tick
            bar.update(1)
            unbounded_eps = _unbounded_eps(norm, lo, hi, x)
            for run in runs:
                bar.set_postfix_str(f"batch {index + 1}, {run.label}", refresh=False)
                tick = time.perf_counter()
                radius = unbounded_eps if run.eps is None else run.eps
                out = run.spec.run(
                    model, x, y, eps=radius, norm=norm, bounds=(lo, hi), seed=derive_seed(seed, index),
                    settings=run.settings,
                )  # fmt: skip
                columns.put(run.key, done, _predict(model, out.x_adv, y)[0])
                if out.broken_by is not None and out.stages is not None:
                    columns.put(f"{run.key}:broken_by", done, out.broken_by)
                    stage_names[run.spec.name] = out.stages
                    totals = stage_seconds.setdefault(run.spec.name, dict.fromkeys(out.stages, 0.0))
                    for stage, spent in out.seconds.items():
                        totals[stage] += spent
                seconds[run.part] += time.perf_counter() - tick
                bar.update(run.cost)
            done += x.shape[0]
            record(digest)
    if saved is not None:
        saved.check_complete()
    if done == 0:
        raise ValueError("data is empty: it gave no samples")

    y_all = columns.take("labels", done)
    clean_predictions = columns.take("clean", done)
    predictions = {
        attack: torch.stack([columns.take(f"{attack}@{i}", done) for i in range(len(eps_list))])
        for attack in attack_names
    }
    stages = {
        name: _stage_record(names, [columns.take(f"{name}@{i}:broken_by", done) for i in range(len(eps_list))],
                            stage_seconds[name])
        for name, names in stage_names.items()
    }  # fmt: skip
    sanity_runs = {}
    for run in _sanity_runs(eps_list[-1], pgd_steps, pgd_restarts, sanity):
        # The base of the steps/restarts checks is PGD at the largest eps, run once when PGD is evaluated.
        shared = run.key == "pgd" and "pgd" in attack_names
        run_predictions = predictions["pgd"][-1] if shared else columns.take(run.key, done)
        sanity_runs[run.key] = AttackRun(
            attack=run.spec.name,
            eps=unbounded_eps if run.eps is None else run.eps,
            steps=run.settings["steps"],
            restarts=run.settings["restarts"],
            random_start=run.settings["random_start"],
            accuracy=accuracy(run_predictions, y_all),
            predictions=run_predictions,
        )
    accuracies = {attack: [accuracy(p, y_all) for p in predictions[attack]] for attack in attack_names}
    # Per class under the strongest attack at the largest eps (on a tie, the later one: the stronger family).
    strongest = min(reversed(attack_names), key=lambda attack: accuracies[attack][-1])
    per_class = [
        class_report("clean", y_all, clean_predictions, num_classes),
        class_report(f"{strongest} eps={eps_list[-1]:g}", y_all, predictions[strongest][-1], num_classes),
    ]
    result = RobustnessResult(
        eps=eps_list,
        norm=norm,
        attacks=attack_names,
        settings=attack_settings,
        bounds=(lo, hi),
        seed=seed,
        num_samples=done,
        num_classes=num_classes,
        clean_accuracy=accuracy(clean_predictions, y_all),
        accuracy=accuracies,
        per_class=per_class,
        seconds=seconds,
        sanity_runs=sanity_runs,
        sanity_checks=[],
        warnings=[],
        labels=y_all,
        clean_predictions=clean_predictions,
        predictions=predictions,
        stages=stages,
    )
    if sanity:
        result.sanity_checks = applicable_checks(result)
        result.warnings = check_gradient_masking(result, emit=True, stacklevel=3)
    result.seconds["total"] = earlier + time.perf_counter() - started
    return result


def _progress_state(
    seconds: dict[str, float],
    stage_seconds: dict[str, dict[str, float]],
    stage_names: dict[str, list[str]],
    num_classes: int,
    unbounded_eps: float,
    elapsed: float,
) -> dict[str, Any]:
    """What a resumed evaluation needs besides the per-sample columns (see :mod:`advfast.eval.progress`)."""
    return {"seconds": seconds, "stage_seconds": stage_seconds, "stage_names": stage_names,
            "num_classes": num_classes, "unbounded_eps": unbounded_eps, "elapsed": elapsed}  # fmt: skip


def _check_eps(eps: Sequence[float]) -> list[float]:
    if isinstance(eps, Real) and not isinstance(eps, bool):
        eps = [eps]
    if isinstance(eps, str | bytes) or not isinstance(eps, Iterable):
        raise ValueError(f"eps must be a sequence of radii >= 0, got {type(eps).__name__}")
    values = list(eps)
    if not values:
        raise ValueError("eps must list at least one radius, got an empty sequence")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
            raise ValueError(f"eps must hold finite radii >= 0, got {value!r} in {values!r}")
    return sorted({float(value) for value in values})


def _check_attacks(attacks: Sequence[str]) -> list[str]:
    if isinstance(attacks, str):
        attacks = [attacks]
    names = list(dict.fromkeys(attacks))
    if not names:
        raise ValueError(f"attacks must name at least one of {list(ATTACKS)}, got an empty sequence")
    unknown = [name for name in names if name not in ATTACKS]
    if unknown:
        raise ValueError(f"attacks must be names from {list(ATTACKS)}, got unknown {unknown!r}")
    return names


def _check_settings(
    settings: Mapping[str, Mapping[str, Any]] | None, attacks: list[str], pgd_steps: int, pgd_restarts: int
) -> dict[str, dict[str, Any]]:
    """Every attack's full settings: its defaults, updated from ``settings`` (PGD's from pgd_steps/restarts)."""
    given = dict(settings or {})
    if not isinstance(settings, Mapping | None) or not all(isinstance(v, Mapping) for v in given.values()):
        raise ValueError(f"settings must map attack names to dicts of settings, got {settings!r}")
    if "pgd" in given:
        raise ValueError("settings: give PGD's steps and restarts as pgd_steps and pgd_restarts, not settings['pgd']")
    stray = [name for name in given if name not in attacks]
    if stray:
        raise ValueError(f"settings name attacks that are not evaluated: {stray!r} (attacks: {attacks})")
    given["pgd"] = {"steps": pgd_steps, "restarts": pgd_restarts}
    return {name: get_attack(name).settings(given.get(name)) for name in attacks}


def _plan(
    eps: list[float],
    attacks: list[str],
    settings: dict[str, dict[str, Any]],
    steps: int,
    restarts: int,
    sanity: bool,
) -> list[_Run]:
    """The attack runs per batch: each attack at each eps, then the sanity runs not already among them."""
    runs = [
        _Run(f"{attack}@{i}", get_attack(attack), settings[attack], radius, part=attack)
        for i, radius in enumerate(eps)
        for attack in attacks
    ]
    sanity_runs = _sanity_runs(eps[-1], steps, restarts, sanity)
    return runs + [run for run in sanity_runs if not (run.key == "pgd" and "pgd" in attacks)]


def _sanity_runs(largest: float, steps: int, restarts: int, sanity: bool) -> list[_Run]:
    if not sanity:
        return []
    spec = get_attack("pgd")

    def pgd_run(key: str, eps: float | None, **changes: Any) -> _Run:
        return _Run(key, spec, spec.settings({"steps": steps, "restarts": restarts} | changes), eps, part="sanity")

    return [
        pgd_run("pgd", largest),
        pgd_run("more_steps", largest, steps=2 * steps),
        pgd_run("more_restarts", largest, restarts=2 * restarts),
        pgd_run("unbounded", None, restarts=1, random_start=False),
    ]


def _stage_record(stages: list[str], broken_by: list[Tensor], seconds: dict[str, float]) -> StageRecord:
    """Accuracy after stage j: the points not broken by stages 0..j."""
    stacked = torch.stack(broken_by)
    accuracy_after = [
        {stage: ((row == -1) | (row > j)).double().mean().item() for j, stage in enumerate(stages)} for row in stacked
    ]
    return StageRecord(stages=stages, accuracy=accuracy_after, seconds=seconds, broken_by=stacked)


def _unbounded_eps(norm: str, lo: float, hi: float, x: Tensor) -> float:
    """The radius of a ball that holds the whole box [lo, hi]^D around any of its points: its diameter."""
    return (hi - lo) if norm == "linf" else (hi - lo) * math.sqrt(x[0].numel())


def _predict(model: Model, x: Tensor, y: Tensor) -> tuple[Tensor, int]:
    """Predicted classes [B] (int64) of the model in eval mode, which is left as it was; and C."""
    with preserved_model_state(model, "eval"), torch.no_grad():
        logits = model(x)
    classes = check_logits(logits, y)
    return logits.argmax(dim=1), classes


def _labels(y: Tensor, x: Tensor, index: int) -> Tensor:
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool or y.shape != (x.shape[0],):
        raise ValueError(
            f"data must give integer class labels y [B] with x [B, ...]; batch {index} has y {y.dtype} "
            f"{tuple(y.shape)} for x {tuple(x.shape)}"
        )
    return y.long()
