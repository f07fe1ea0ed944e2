"""Data files inside installed packages, found without importing the package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from advfast.data.errors import DatasetUnavailable


def package_folder(package: str, name: str, install: str) -> Path:
    """The folder of ``package``; DatasetUnavailable (with the install command) when it is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailable(name, install)
    return Path(next(iter(spec.submodule_search_locations)))


def read_text(path: Path) -> str:
    """A text file as UTF-8, or Windows-1252 where it is not valid UTF-8 (one BBC article is)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")
