"""Checkpoints written atomically, checksummed, and read back safely (``weights_only=True``) with clear errors.

A checkpoint is a torch file holding a dict: ``format``, ``version``, ``role`` (what wrote it: ``"classifier"``
for ``advfast train``, ``"generator"`` for ``advfast augment``, ...), ``checksum`` and the payload. The checksum
is a SHA-256 over the payload in a canonical order (every tensor's dtype, shape and bytes; every other value's
type and repr), so a flipped bit anywhere in the payload (a weight turned into 3.4e38, say) is caught at load
time instead of being trained on, evaluated, or re-saved by a resumed run.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from advfast.runtime.files import atomic_write

FORMAT = "advfast-checkpoint"
VERSION = 2

ROLE_NAMES = {
    "classifier": "a classifier checkpoint (advfast train)",
    "generator": "a generator checkpoint (advfast augment)",
    "text-classifier": "a text-classifier checkpoint (advfast train on text data)",
    "evaluation": "an evaluation's progress file (advfast eval)",
}


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, truncated, corrupt, of another kind, or not written by advfast."""


def payload_checksum(payload: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of ``payload`` in a canonical traversal; equal payloads give equal digests."""
    digest = hashlib.sha256()
    _feed(digest, payload)
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, Mapping):
        digest.update(f"D{len(value)}".encode())
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, list | tuple):
        digest.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"{type(value).__name__}:{value!r};".encode())


def save_checkpoint(path: str | Path, payload: Mapping[str, Any], *, role: str) -> Path:
    """Write ``payload`` (tensors and plain data) to ``path`` atomically (see :mod:`advfast.runtime.files`)."""
    record = {"format": FORMAT, "version": VERSION, "role": role, "checksum": payload_checksum(payload), **payload}
    return atomic_write(path, lambda file: torch.save(record, file))


def describe_role(role: Any) -> str:
    return ROLE_NAMES.get(role, f"a checkpoint of role {role!r}")


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    role: str | None = None,
    required: Iterable[str] = (),
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`: only tensors and plain data are unpickled, the
    checksum is verified, and with ``role`` the file must have been written for that role; ``required`` keys
    must be present. Every failure is a :class:`CheckpointError` that says what the file is."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such run folder or checkpoint file")
    if path.suffix == ".json":
        raise CheckpointError(f"{path} is a JSON file, not a checkpoint: give the run folder or its last.pt")
    try:
        record = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights_only" in reason or "Weights only load failed" in str(exc):
            reason = "it holds objects other than tensors and plain data, which advfast never writes"
        raise CheckpointError(f"{path}: not a readable advfast checkpoint (truncated or corrupt?): {reason}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an advfast checkpoint")
    if record.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {record.get('version')}, this advfast reads version {VERSION}"
        )
    payload = {k: v for k, v in record.items() if k not in ("format", "version", "role", "checksum")}
    if record.get("checksum") != payload_checksum(payload):
        raise CheckpointError(f"{path}: corrupt checkpoint: its contents do not match the checksum saved with them")
    if role is not None and record.get("role") != role:
        raise CheckpointError(f"{path} is {describe_role(record.get('role'))}, not {describe_role(role)}")
    missing = [key for key in required if key not in record]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint: missing {missing}")
    return record


def check_finite_state(state: Mapping[str, Any], path: str | Path, what: str = "weights") -> None:
    """Non-finite floating values in a loaded state dict are an error (a checkpoint of a diverged run)."""
    bad = [
        name
        for name, value in state.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CheckpointError(f"{path}: its {what} hold NaN or Inf ({shown}); the run diverged or the file is corrupt")
