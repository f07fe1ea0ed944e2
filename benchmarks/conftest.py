"""Shared fixtures of advfast's benchmarks: collection of ``bench_*.py``, round counts, machine description, and
device-side timing of CUDA work.

The project's pytest settings (pyproject.toml) collect ``test_*.py`` from ``tests/`` only; the hook below
lets ``pytest benchmarks`` collect this folder's ``bench_*.py`` files too, without touching those settings.
"""

from __future__ import annotations

import math
import platform
import statistics
from collections.abc import Callable
from dataclasses import dataclass
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


# ---- CUDA: device-side timing ------------------------------------------------------------------------------
# Wall clock around many launches measures the host as much as the GPU: a few-microsecond kernel is
# launch-bound from Python, and the final synchronisation adds its latency. The benchmarks therefore time CUDA
# work on the device: ``calls`` calls captured once into a CUDA graph, each round one replay between two CUDA
# events, so the figure is the device's time per call, taken the same way for every variant (eager chains,
# torch.compile, advfast, the copy floor). Work that capture refuses falls back to events around eager calls
# and says so in ``device_timing``. report.py prefers ``device_median_s`` to pytest-benchmark's wall clock.


@dataclass(frozen=True)
class DeviceTime:
    """Median and all rounds' seconds per call, and how they were taken ("graph" or "events")."""

    median_s: float
    rounds_s: tuple[float, ...]
    method: str

    def extra_info(self) -> dict[str, Any]:
        return {
            "device_median_s": self.median_s,
            "device_min_s": min(self.rounds_s),
            "device_rounds": len(self.rounds_s),
            "device_timing": self.method,
        }


def _capture(fn: Callable[[], Any], calls: int) -> torch.cuda.CUDAGraph | None:
    """fn called `calls` times inside one CUDA graph (after a warm-up on a side stream), or None when capture
    fails (the failed capture is discarded; the caller times eager calls instead)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
    except RuntimeError:
        torch.cuda.synchronize()
        return None
    return graph


def device_time(fn: Callable[[], Any], calls: int, rounds: int) -> DeviceTime:
    """Seconds per call of fn on the current CUDA device: the median over `rounds` of one graph replay of
    `calls` calls (or of `calls` eager calls), timed with CUDA events."""
    graph = _capture(fn, calls)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def one_round() -> float:
        start.record()
        if graph is not None:
            graph.replay()
        else:
            for _ in range(calls):
                fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / calls

    one_round()  # warm-up (the first replay uploads the graph)
    times = tuple(one_round() for _ in range(rounds))
    return DeviceTime(statistics.median(times), times, "graph" if graph is not None else "events")


def events_time(fn: Callable[[], Any], rounds: int) -> DeviceTime:
    """Seconds of one call of fn between CUDA events (no graph: for work that synchronises with the host, such
    as a whole attack); the median over `rounds` after one warm-up call."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    times = []
    for _ in range(rounds):
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return DeviceTime(statistics.median(times), tuple(times), "events")


@pytest.fixture
def cuda_device_time() -> Callable[..., DeviceTime]:
    """``cuda_device_time(fn, calls, rounds)``: seconds per call of fn on the GPU, from CUDA graph replays timed
    with CUDA events (see above)."""
    return device_time


@pytest.fixture
def cuda_events_time() -> Callable[..., DeviceTime]:
    """``cuda_events_time(fn, rounds)``: seconds of one whole call of fn between CUDA events (no graph)."""
    return events_time
