"""Clean and robust accuracy of a classifier over a data set, at several eps, under FGSM and PGD."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from numbers import Real

import torch
from torch import Tensor
from tqdm import tqdm

from advfast.attacks import fgsm, pgd, preserved_model_state
from advfast.attacks.validation import check_bounds, check_logits, check_norm
from advfast.checks import check_count
from advfast.eval.batches import EvalData, batches
from advfast.eval.metrics import accuracy, class_report
from advfast.eval.predict import model_device
from advfast.eval.result import AttackRun, RobustnessResult
from advfast.eval.sanity import applicable_checks, check_gradient_masking
from advfast.runtime.seeds import derive_seed

Model = Callable[[Tensor], Tensor]

ATTACKS = ("fgsm", "pgd")


@dataclass(frozen=True)
class _Run:
    """One attack configuration, run on every batch. ``eps`` None: unbounded (the whole input range)."""

    key: str  # "fgsm@<i>", "pgd@<i>" for eps[i]; or a sanity run's name
    attack: str
    eps: float | None
    steps: int
    restarts: int
    random_start: bool
    part: str  # where its time is counted: the attack, or "sanity"

    @property
    def label(self) -> str:
        """For the progress bar: "pgd eps=0.1", or the sanity run's name."""
        return self.key if "@" not in self.key else f"{self.attack} eps={self.eps:g}"

    @property
    def cost(self) -> int:
        """Forward-backward passes per batch, the unit of the progress bar."""
        return self.steps * self.restarts


def evaluate_robustness(
    model: Model,
    data: EvalData,
    *,
    eps: Sequence[float],
    norm: str = "linf",
    attacks: Sequence[str] = ATTACKS,
    pgd_steps: int = 40,
    pgd_restarts: int = 1,
    bounds: tuple[float, float] = (0.0, 1.0),
    batch_size: int = 256,
    device: torch.device | str | None = None,
    seed: int = 0,
    progress: bool = True,
    sanity: bool = True,
) -> RobustnessResult:
    """Clean accuracy, and robust accuracy under each attack at each eps::

        clean accuracy = (1/N) * sum_i [argmax f(x_i) == y_i]
        robust accuracy(attack, eps) = (1/N) * sum_i [argmax f(x'_i) == y_i],  x'_i = attack(f, x_i, y_i, eps)

    where ``"fgsm"`` is :func:`advfast.fgsm` (one step of size eps from x) and ``"pgd"`` is
    :func:`advfast.pgd` with ``pgd_steps`` steps of the default size ``2.5 * eps / steps``, a random start,
    ``pgd_restarts`` restarts and ``early_stop=True`` (a sample once fooled stays fooled, so more restarts,
    or more steps of the same size, never raise the accuracy). Inputs are batched as
    :func:`advfast.eval.batches.batches` says and run on ``device`` (default: where the model's parameters
    are). The random starts of batch ``b`` (from 0) come from a generator on ``device`` seeded with
    ``derive_seed(seed, b)`` (:mod:`advfast.runtime.seeds`), the same for every attack and eps: the same seed
    gives the same numbers, and the checks compare attacks on equal terms.

    With ``sanity``, PGD also runs at the largest eps with twice the steps and with twice the restarts, and
    with an unbounded eps from the clean input, and :func:`advfast.eval.sanity.check_gradient_masking`
    compares all the accuracies; each failed check is returned in ``result.warnings`` and issued as a
    :class:`advfast.eval.GradientMaskingWarning`.

    Args:
        model: maps x [B, ...] to logits [B, C]; an ``nn.Module`` is run in eval mode and left as it was.
        data: a Dataset of (x, y), a DataLoader of (x, y) batches, or (x, y) tensors; y integer class labels.
        eps: the radii to evaluate, each finite and >= 0 (sorted, duplicates dropped, in the result).
        norm: ``"linf"`` or ``"l2"``. attacks: names from ``("fgsm", "pgd")``.
        pgd_steps, pgd_restarts: PGD's steps per restart and restarts. bounds: the valid input range.
        batch_size: samples per batch for a Dataset or tensors (a DataLoader keeps its own).
        seed: for the random starts. progress: a tqdm bar counting gradient steps over batches.

    Returns:
        a :class:`RobustnessResult` with the accuracies, per-class metrics (clean, and under the strongest
        attack at the largest eps: PGD when run), the sanity runs and warnings, seconds per part, and the
        per-sample predictions.
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
    batch_iter, num_batches = batches(data, batch_size)
    device = model_device(model) if device is None else torch.device(device)
    runs = _plan(eps_list, attack_names, pgd_steps, pgd_restarts, sanity)

    seconds = dict.fromkeys(["clean", *attack_names, *(["sanity"] if sanity else [])], 0.0)
    labels: list[Tensor] = []
    clean: list[Tensor] = []
    adversarial: dict[str, list[Tensor]] = {run.key: [] for run in runs}
    unbounded_eps = math.nan
    num_classes = 0
    per_batch = 1 + sum(run.cost for run in runs)
    bar = tqdm(
        total=None if num_batches is None else num_batches * per_batch,
        desc="robust eval",
        unit="step",
        disable=not progress,
    )
    with bar:
        for index, (x, y) in enumerate(batch_iter):
            if x.shape[0] == 0:
                continue
            x, y = x.to(device), _labels(y, x, index).to(device)
            tick = time.perf_counter()
            predicted, classes = _predict(model, x, y)
            if num_classes and classes != num_classes:
                raise ValueError(f"model returned {classes} logits for batch {index}, {num_classes} before")
            num_classes = classes
            labels.append(y.cpu())
            clean.append(predicted.cpu())
            seconds["clean"] += time.perf_counter() - tick
            bar.update(1)
            unbounded_eps = _unbounded_eps(norm, lo, hi, x)
            for run in runs:
                bar.set_postfix_str(f"batch {index + 1}, {run.label}", refresh=False)
                tick = time.perf_counter()
                radius = unbounded_eps if run.eps is None else run.eps
                x_adv = _attack(model, run, x, y, radius, norm, (lo, hi), _generator(device, seed, index))
                adversarial[run.key].append(_predict(model, x_adv, y)[0].cpu())
                seconds[run.part] += time.perf_counter() - tick
                bar.update(run.cost)
    if not labels:
        raise ValueError("data is empty: it gave no samples")

    y_all = torch.cat(labels)
    clean_predictions = torch.cat(clean)
    by_key = {run.key: torch.cat(adversarial[run.key]) for run in runs}
    predictions = {
        attack: torch.stack([by_key[f"{attack}@{i}"] for i in range(len(eps_list))]) for attack in attack_names
    }
    if sanity and "pgd" in attack_names:
        by_key["pgd"] = predictions["pgd"][-1]  # the base of the steps/restarts checks: PGD at the largest eps
    sanity_runs = {
        run.key: AttackRun(
            attack=run.attack,
            eps=unbounded_eps if run.eps is None else run.eps,
            steps=run.steps,
            restarts=run.restarts,
            random_start=run.random_start,
            accuracy=accuracy(by_key[run.key], y_all),
            predictions=by_key[run.key],
        )
        for run in _sanity_runs(eps_list[-1], pgd_steps, pgd_restarts, sanity)
    }
    strongest = "pgd" if "pgd" in attack_names else attack_names[-1]
    per_class = [
        class_report("clean", y_all, clean_predictions, num_classes),
        class_report(f"{strongest} eps={eps_list[-1]:g}", y_all, predictions[strongest][-1], num_classes),
    ]
    result = RobustnessResult(
        eps=eps_list,
        norm=norm,
        attacks=attack_names,
        bounds=(lo, hi),
        pgd_steps=pgd_steps,
        pgd_restarts=pgd_restarts,
        seed=seed,
        num_samples=int(y_all.shape[0]),
        num_classes=num_classes,
        clean_accuracy=accuracy(clean_predictions, y_all),
        accuracy={attack: [accuracy(p, y_all) for p in predictions[attack]] for attack in attack_names},
        per_class=per_class,
        seconds=seconds,
        sanity_runs=sanity_runs,
        sanity_checks=[],
        warnings=[],
        labels=y_all,
        clean_predictions=clean_predictions,
        predictions=predictions,
    )
    if sanity:
        result.sanity_checks = applicable_checks(result)
        result.warnings = check_gradient_masking(result, emit=True, stacklevel=3)
    result.seconds["total"] = time.perf_counter() - started
    return result


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
        raise ValueError(f"attacks must name at least one of {ATTACKS}, got an empty sequence")
    unknown = [name for name in names if name not in ATTACKS]
    if unknown:
        raise ValueError(f"attacks must be names from {ATTACKS}, got unknown {unknown!r}")
    return names


def _plan(eps: list[float], attacks: list[str], steps: int, restarts: int, sanity: bool) -> list[_Run]:
    """The attack runs per batch: each attack at each eps, then the sanity runs not already among them."""
    runs = [
        _Run(f"{attack}@{i}", attack, radius, *_config(attack, steps, restarts), part=attack)
        for i, radius in enumerate(eps)
        for attack in attacks
    ]
    sanity_runs = _sanity_runs(eps[-1], steps, restarts, sanity)
    return runs + [run for run in sanity_runs if not (run.key == "pgd" and "pgd" in attacks)]


def _config(attack: str, steps: int, restarts: int) -> tuple[int, int, bool]:
    """(steps, restarts, random_start): FGSM is one step from x; PGD starts at random."""
    return (1, 1, False) if attack == "fgsm" else (steps, restarts, True)


def _sanity_runs(largest: float, steps: int, restarts: int, sanity: bool) -> list[_Run]:
    if not sanity:
        return []
    return [
        _Run("pgd", "pgd", largest, steps, restarts, True, part="sanity"),
        _Run("more_steps", "pgd", largest, 2 * steps, restarts, True, part="sanity"),
        _Run("more_restarts", "pgd", largest, steps, 2 * restarts, True, part="sanity"),
        _Run("unbounded", "pgd", None, steps, 1, False, part="sanity"),
    ]


def _unbounded_eps(norm: str, lo: float, hi: float, x: Tensor) -> float:
    """The radius of a ball that holds the whole box [lo, hi]^D around any of its points: its diameter."""
    return (hi - lo) if norm == "linf" else (hi - lo) * math.sqrt(x[0].numel())


def _attack(
    model: Model,
    run: _Run,
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: str,
    bounds: tuple[float, float],
    generator: torch.Generator,
) -> Tensor:
    if run.attack == "fgsm":
        return fgsm(model, x, y, eps=eps, norm=norm, bounds=bounds)
    return pgd(
        model,
        x,
        y,
        eps=eps,
        steps=run.steps,
        norm=norm,
        random_start=run.random_start,
        restarts=run.restarts,
        early_stop=True,
        bounds=bounds,
        generator=generator,
    )


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


def _generator(device: torch.device, seed: int, batch: int) -> torch.Generator:
    """The random-start generator of one batch: seeded from (seed, batch), the same for every attack."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, batch))
