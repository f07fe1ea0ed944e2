"""AutoAttack end to end: ``advfast.eval.autoattack`` (APGD-CE, APGD-T, Square; compaction) against the reference
AutoAttack (fra31/auto-attack as ``pyautoattack==0.2.0``, version ``standard``: APGD-CE, APGD-T, FAB-T, Square),
same model, same points, same CPU, one after the other in one run.

Before timing, both run once and must agree: advfast's robust accuracy within +-0.3 points of the reference's
plus one point's worth (on N points a single point is 100/N points) and never above it by more. The timed
rounds then run each side; ``extra_info`` records both accuracies, the per-stage seconds and the ratio, which
the test also prints. The reference is optional (``pip install --no-deps pyautoattack==0.2.0``); without it the
file skips.

The model: the run folder in ``ADVFAST_BENCH_EVAL_RUN`` (an ``advfast train`` run, e.g. an FGSM-RS MNIST model),
its first ``ADVFAST_BENCH_EVAL_N`` test images (default 100) at the run's eps; without it, scikit-learn's digits
CNN trained here for a few seconds, at eps 0.05 (some points robust, some not). Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/pytest benchmarks/bench_eval.py --benchmark-min-rounds 1 -s \\
        --benchmark-json=benchmarks/results/eval-cpu.json
    ADVFAST_BENCH_EVAL_RUN=/work/runs/eval-fgsm ADVFAST_BENCH_EVAL_N=200 OMP_NUM_THREADS=1 \\
        .venv/bin/pytest benchmarks/bench_eval.py --benchmark-min-rounds 1 -s
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from advfast.eval import autoattack

RUN = os.environ.get("ADVFAST_BENCH_EVAL_RUN")
N = int(os.environ.get("ADVFAST_BENCH_EVAL_N", "100"))
BATCH = 250  # the reference's default batch size; advfast uses the same chunks
TOLERANCE_POINTS = 0.3

pyautoattack = pytest.importorskip("pyautoattack", reason="the reference: pip install --no-deps pyautoattack==0.2.0")


@pytest.fixture(scope="module")
def problem() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, float, str]:
    """(model in eval mode, x [N, C, H, W], y [N], eps, description)."""
    if RUN:
        from advfast.train import load_classifier

        trained = load_classifier(RUN)
        test = trained.data().test
        return trained.model, test.x[:N], test.y[:N], trained.config.eps, f"{RUN} ({trained.config.method})"
    from advfast.data import load_digits
    from advfast.demo import train_classifier
    from advfast.models import digits_cnn

    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = load_digits(seed=0)
    model = train_classifier(digits_cnn(), x_train, y_train, epochs=15, seed=0).eval()
    return model, x_test[:N], y_test[:N], 0.05, "digits CNN (standard training, 15 epochs)"


def reference_autoattack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict[str, Any]:
    from pyautoattack import AutoAttack

    logging.getLogger("auto-attack").setLevel(logging.WARNING)  # its per-batch lines
    aa = AutoAttack(model, norm="Linf", eps=eps, version="standard", device="cpu", seed=0)
    _, y_adv = aa.run_standard_evaluation(x, y, batch_size=BATCH)
    return {"robust_accuracy": (y_adv == y).double().mean().item()}


def advfast_autoattack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict[str, Any]:
    result = autoattack(model, x, y, eps=eps, batch_size=BATCH, seed=0)
    robust = result.robust.double().mean().item()
    return {"robust_accuracy": robust, "stages": result.accuracy, "seconds": result.seconds}


def _timed(fn: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], float]:
    began = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - began


def test_autoattack_against_the_reference(
    benchmark: Any, environment: Callable[[str], dict[str, Any]], problem: tuple
) -> None:
    model, x, y, eps, what = problem
    ours, ours_seconds = _timed(lambda: advfast_autoattack(model, x, y, eps))
    ref, ref_seconds = _timed(lambda: reference_autoattack(model, x, y, eps))
    difference = 100 * (ours["robust_accuracy"] - ref["robust_accuracy"])
    one_point = 100 / len(y)
    assert difference <= TOLERANCE_POINTS + one_point, f"advfast {difference:+.2f} points above the reference"
    assert abs(difference) <= TOLERANCE_POINTS + one_point, f"advfast {difference:+.2f} points from the reference"

    def both() -> None:
        advfast_autoattack(model, x, y, eps)

    benchmark.pedantic(both, rounds=1, iterations=1)
    ratio = ref_seconds / ours_seconds
    benchmark.extra_info.update(
        environment("cpu")
        | {
            "model": what,
            "points": len(y),
            "eps": eps,
            "advfast_robust_accuracy": ours["robust_accuracy"],
            "reference_robust_accuracy": ref["robust_accuracy"],
            "advfast_stage_accuracy": ours["stages"],
            "advfast_stage_seconds": ours["seconds"],
            "advfast_seconds": ours_seconds,
            "reference_seconds": ref_seconds,
            "speedup": ratio,
        }
    )
    print(
        f"\n{what}, {len(y)} points, eps {eps:g}: advfast {100 * ours['robust_accuracy']:.1f}% in "
        f"{ours_seconds:.1f} s, reference {100 * ref['robust_accuracy']:.1f}% in {ref_seconds:.1f} s: "
        f"advfast {ratio:.1f}x faster"
    )
