"""The run folder: the one place a command writes, owned by one process at a time.

A command is given a folder (``--out``, or the folder it resumes) and writes only inside it, whatever paths a
checkpoint recorded. Before any work it takes the folder: creates it, takes an exclusive lock on the folder
itself (``flock`` on its directory handle: a second job on the same folder is refused at once, instead of two
jobs interleaving their files; the lock dies with its process, so a killed job never leaves the folder locked,
and no lock file is left in the folder), checks that it can write there and that the disk has room for what
the job will save, and removes temporary files an interrupted write left behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from advfast.runtime.files import remove_stale_temporaries


class RunFolderError(RuntimeError):
    """The run folder cannot be used: not writable, full, or in use by another job."""


class RunFolder:
    """An owned folder. Use as a context manager, or call :meth:`acquire` / :meth:`release`.

    ``needed_bytes``: free space the job needs (say, two checkpoints); refused when the disk has less.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock: int | None = None  # the folder's directory handle, locked

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def held(self) -> bool:
        return self._lock is not None

    def acquire(self, needed_bytes: int = 0) -> RunFolder:
        if self._lock is not None:
            return self
        try:
            if self.path.exists() and not self.path.is_dir():
                raise RunFolderError(f"{self.path} is a file, not a folder")
            self.path.mkdir(parents=True, exist_ok=True)
            lock = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise RunFolderError(f"cannot write into {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(lock)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise RunFolderError(
                    f"{self.path} is in use by another advfast job; wait for it to finish or choose another folder"
                ) from None
            raise RunFolderError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
        self._lock = lock
        try:
            _probe(self.path, needed_bytes)
            remove_stale_temporaries(self.path)
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> RunFolder:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _probe(folder: Path, needed_bytes: int) -> None:
    """Fail now, not after an epoch of work, when nothing (or not enough) can be written in ``folder``."""
    handle, probe = None, None
    try:
        handle, probe = tempfile.mkstemp(prefix=".advfast-probe.", dir=folder)
        os.write(handle, b"\0" * 4096)
        os.fsync(handle)
    except OSError as exc:
        raise RunFolderError(f"cannot write into {folder}: {exc.strerror or exc}") from None
    finally:
        if handle is not None:
            os.close(handle)
        if probe is not None:
            Path(probe).unlink(missing_ok=True)
    if needed_bytes > 0:
        free = shutil.disk_usage(folder).free
        if free < needed_bytes:
            raise RunFolderError(
                f"not enough free space in {folder}: this job writes about {needed_bytes / 2**20:.1f} MiB, "
                f"{free / 2**20:.1f} MiB are free"
            )


def check_writable_file(path: str | Path, needed_bytes: int = 0) -> Path:
    """Before a job that ends by writing ``path`` (an .npz, a report): fail now if its folder cannot take it."""
    path = Path(path)
    if path.is_dir():
        raise RunFolderError(f"{path} is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot write into {path.parent}: {exc.strerror or exc}") from None
    _probe(path.parent, needed_bytes)
    return path
