"""What the build reports, and the errors a mismatched or wrongly built install gives."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import advfast
from advfast import _extension
from advfast._extension import _C

ROOT = Path(__file__).resolve().parent.parent


def test_build_info_describes_this_build() -> None:
    info = advfast.build_info()
    assert info["torch_version"] == torch.__version__
    assert "baseline" in info["cpu_isas"]
    if torch.version.cuda is None:
        assert info["cuda"] is False, "a CPU torch cannot give a CUDA build"
    if info["cuda"]:
        archs = info["cuda_archs"].split(",")
        assert archs and all(a.rstrip("-real").isdigit() for a in archs), archs
        assert info["cuda_version"]
    else:
        assert info["cuda_archs"] == ""


def test_ops_are_registered_with_in_place_schemas() -> None:
    for name in ("linf_step_", "l2_step_", "random_start_"):
        schema = str(getattr(torch.ops.advfast, name).default._schema)
        assert schema.startswith(f"advfast::{name}(Tensor(a!) x_adv"), schema
        assert schema.endswith("-> ()"), schema


def test_a_torch_mismatch_is_explained_before_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    build = importlib.import_module("advfast._build_info")
    monkeypatch.setattr(build, "TORCH_VERSION", "0.0.1")
    with pytest.raises(ImportError, match=r"built against torch 0\.0\.1 but torch .* is installed; rebuild"):
        _extension._load()


def test_cpu_isa_can_be_chosen_and_bad_names_are_refused() -> None:
    previous = _C.cpu_isa()
    try:
        for isa in advfast.build_info()["cpu_isas"]:
            _C.set_cpu_isa(isa)
            assert _C.cpu_isa() == isa
        with pytest.raises(RuntimeError, match='isa must be "baseline" or "avx2", got "sse9"'):
            _C.set_cpu_isa("sse9")
    finally:
        _C.set_cpu_isa(previous)


def test_environment_variable_picks_the_isa(tmp_path: Path) -> None:
    code = "import advfast; from advfast._extension import _C; print(_C.cpu_isa())"
    env = {**os.environ, "ADVFAST_CPU_ISA": "baseline"}
    # Run outside the source tree, so that the installed advfast is imported.
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.strip() == "baseline"


@pytest.mark.slow
def test_isolated_build_fails_fast_with_instructions(tmp_path: Path) -> None:
    """torch is kept out of build-system.requires, so an isolated build stops and says what to run."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "pip install torch scikit-build-core cmake ninja pybind11" in output, "the build tools, named"
    assert "pip install --no-build-isolation ." in output


def test_every_module_of_the_package_imports() -> None:
    """Catches a name imported from a module that no longer defines it, in code no other test reaches."""
    import pkgutil

    names = [m.name for m in pkgutil.walk_packages(advfast.__path__, "advfast.") if not m.name.endswith("__main__")]
    assert "advfast.runtime.loop" in names and "advfast.cli.train" in names
    for name in names:
        importlib.import_module(name)
