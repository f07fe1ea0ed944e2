"""Which errors a user can fix, and how the command line prints them: one line, naming the file or argument."""

from __future__ import annotations

import sys


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe bad input or a bad environment (never a bug in advfast): bad arguments and data,
    unreadable or foreign checkpoints, unwritable or full folders, a data set or model that is not installed, a run
    that diverged."""
    from advfast.data import DatasetUnavailable
    from advfast.runtime import CheckpointError, RunFolderError
    from advfast.text.models import ModelUnavailable

    return (
        ValueError, CheckpointError, RunFolderError, DatasetUnavailable, ModelUnavailable, OSError,
        FloatingPointError,
    )  # fmt: skip


def report_error(command: str, exc: BaseException) -> int:
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        message = f"{where}{exc.strerror}"
    else:
        message = str(exc)
    print(f"advfast {command}: error: {message}", file=sys.stderr)
    return 2
