"""Atomic file writes: a reader (or a crash, a kill, a full disk) sees the old file or the new one, never half.

Every file advfast writes goes through :func:`atomic_write`: the content is written to a temporary file in the
same folder (named ``.<name>.<random>.tmp``), flushed to disk, given the permissions a plain ``open()`` would
give (``0o666`` less the umask; ``mkstemp`` alone would leave ``0o600``), then renamed over the target. When
anything fails the temporary file is removed; one left behind by a ``kill -9`` is removed the next time a run
takes the folder (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, hence the fallback only)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[Any]], object], *, binary: bool = True) -> Path:
    """Create or replace ``path`` with what ``write(file)`` writes into an open file (binary or text)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(handle, 0o666 & ~current_umask())
        with os.fdopen(handle, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda file: file.write(text), binary=False)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that an interrupted :func:`atomic_write` left in ``folder`` (the caller must
    own the folder: see :class:`advfast.runtime.RunFolder`). Returns what was removed."""
    removed = []
    # mkstemp's names: "." + target name + "." + 8 random characters + suffix.
    for candidate in Path(folder).glob(f".*.{'?' * 8}{TEMP_SUFFIX}"):
        if candidate.is_file():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed
