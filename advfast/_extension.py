"""Loads advfast's compiled extension, after checking it was built against the torch that is installed.

A C++ extension only works with the exact torch it was compiled against; loading it beside another would fail
in the dynamic loader with an undefined symbol. The build writes ``_build_info.py`` next to the extension, so
the mismatch is caught and explained before the library is loaded.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

REBUILD_HINT = "rebuild it in this environment: pip install --no-build-isolation --force-reinstall --no-deps ."


def _load() -> Any:
    try:
        build = importlib.import_module("advfast._build_info")
    except ImportError as exc:
        raise ImportError(
            f"advfast's compiled extension is missing from {Path(__file__).parent}: that is a source tree "
            "(run Python from another folder to import the installed copy) or the build failed; "
            f"{REBUILD_HINT}"
        ) from exc
    if torch.__version__ != build.TORCH_VERSION:
        raise ImportError(
            f"advfast was built against torch {build.TORCH_VERSION} but torch {torch.__version__} is "
            f"installed; {REBUILD_HINT}"
        )
    try:
        return importlib.import_module("advfast._C")
    except ImportError as exc:
        raise ImportError(f"advfast's extension failed to load ({exc}); {REBUILD_HINT}") from exc


_C = _load()


def build_info() -> dict[str, Any]:
    """How the loaded extension was built.

    Returns:
        ``{"cuda": bool, "cuda_version": str, "cuda_archs": str, "torch_version": str, "compiler": str}``;
        ``cuda_archs`` lists CMake architectures such as ``"80-real,90"`` (empty for a CPU-only build).
    """
    return dict(_C.build_info())


def has_cuda_kernels() -> bool:
    """True when this build registered CUDA kernels (torch was a CUDA build and nvcc was found)."""
    return bool(_C.build_info()["cuda"])
