"""Shared fixtures of advfast's benchmarks: collection of ``bench_*.py``, round counts, machine description.

The project's pytest settings (pyproject.toml) collect ``test_*.py`` from ``tests/`` only; the hook below
lets ``pytest benchmarks`` collect this folder's ``bench_*.py`` files too, without touching those settings.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import advfast

MAX_ROUNDS = 200  # enough for a stable median; the time budget normally stops earlier


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Module | None:
    """Collect ``benchmarks/bench_*.py`` when the folder is collected (a file named on the command line is
    collected by pytest itself)."""
    is_bench = file_path.suffix == ".py" and file_path.name.startswith("bench_")
    if is_bench and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def device_name(device: str) -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one) or the CUDA device's name."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@pytest.fixture
def rounds_for(request: pytest.FixtureRequest) -> Callable[[float], int]:
    """Rounds for one benchmark from the measured seconds of one round: enough to fill
    ``--benchmark-max-time`` but at least ``--benchmark-min-rounds`` (pytest-benchmark's own rule, which
    ``benchmark.pedantic`` does not apply by itself)."""
    min_rounds = int(request.config.getoption("benchmark_min_rounds"))
    max_time = float(request.config.getoption("benchmark_max_time"))

    def rounds(seconds_per_round: float) -> int:
        wanted = math.ceil(max_time / max(seconds_per_round, 1e-9))
        return max(min_rounds, min(wanted, MAX_ROUNDS))

    return rounds


def _environment(device: str) -> dict[str, Any]:
    info = advfast.build_info()
    return {
        "device": device,
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "advfast_cpu_isas": ",".join(info.get("cpu_isas", [])),
        "advfast_cuda_archs": info.get("cuda_archs", ""),
    }


@pytest.fixture
def environment() -> Callable[[str], dict[str, Any]]:
    """``environment(device)``: what a result depends on beside the code (device and its name, torch version,
    threads, the CPU instruction set torch picked, advfast's build), for ``benchmark.extra_info``."""
    return _environment
