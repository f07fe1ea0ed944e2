"""The cost of one training batch under each adversarial-training objective, as a multiple of standard training:
MNIST-shaped batches (128 x 1 x 28 x 28) on the reference MNIST CNN (advfast.models.mnist_cnn), Adam, the
objectives' default settings at eps = 0.3 (PGD and TRADES: 10 steps; free: 8 replays per batch; mixed: FGSM).

This is the "cost per epoch" column of the README's MNIST table measured side by side in one run on an otherwise
idle machine (the training runs' own epoch times were taken while other work shared the CPU). A batch of free
training is its 8 replays. Run from the repository root::

    .venv/bin/pytest benchmarks/bench_train.py --benchmark-json=benchmarks/results/train-cpu.json
    .venv/bin/python benchmarks/report.py benchmarks/results/train-cpu.json
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from advfast.models import mnist_cnn
from advfast.train import AttackSettings, make_objective

METHODS = ("standard", "mixed", "pgd", "fgsm-rs", "free", "trades")
BATCH, EPS = 128, 0.3


def one_batch(method: str) -> Callable[[], None]:
    """A closure that trains one batch (all of free's replays) with ``method``, as the trainer does."""
    torch.manual_seed(0)
    model = mnist_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    mode = "eval" if method == "trades" else "as_is"
    objective = make_objective(method, AttackSettings(eps=EPS, steps=10, model_mode=mode))
    x, y = torch.rand(BATCH, 1, 28, 28), torch.randint(0, 10, (BATCH,))
    generator = torch.Generator().manual_seed(0)

    def run() -> None:
        model.train()
        for _ in range(objective.replays):
            loss = objective(model, x, y, generator=generator).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            objective.after_backward()
            optimizer.step()

    return run


@pytest.mark.parametrize("method", METHODS)
def test_training_batch(
    benchmark: Any, method: str, rounds_for: Callable[[float], int], environment: Callable[[str], dict]
) -> None:
    run = one_batch(method)
    run()  # warm-up, and a check that the objective trains at all
    benchmark.group = "cpu-train-mnist"
    benchmark.extra_info.update(environment("cpu"))
    benchmark.extra_info.update({"kind": "train", "method": method, "batch": BATCH, "eps": EPS})
    t0 = time.perf_counter()
    run()
    rounds = rounds_for(time.perf_counter() - t0)
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=0)
