"""An evaluation's progress file: what a long evaluation has done so far, so a killed one resumes exactly.

AutoAttack on 10,000 MNIST images takes hours on a CPU. :func:`advfast.eval.evaluate_robustness` given a
``checkpoint`` path writes this file atomically after every batch: the per-sample outputs so far, the seconds
spent, and a digest of each batch's inputs and labels. Run again with the same path and it skips the batches
the file holds and attacks the rest. Batch ``b``'s random draws are seeded from ``(seed, b)`` alone, so the
resumed result equals an uninterrupted one, sample for sample. The text evaluations
(:func:`advfast.text.training.evaluate_text_classifier`) keep one such file per attack, with their counts and
the random generator's state after each batch.

It resumes only the same evaluation: the settings (eps, norm, attacks and their settings, bounds, seed, batch
size, sanity checks), the model's weights (a digest of its ``state_dict``) and every batch already done (its
digest) must match, or the file is refused with the fields that differ — it never mixes two evaluations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from advfast.eval.columns import Columns
from advfast.runtime.checkpoint import load_checkpoint, payload_checksum, save_checkpoint

ROLE = "evaluation"


class EvalProgressMismatch(ValueError):
    """A progress file written by another evaluation (other settings, weights or data)."""


def model_digest(model: Callable[[Tensor], Tensor]) -> str | None:
    """SHA-256 of an ``nn.Module``'s state dict (weights and buffers); None for any other callable."""
    return payload_checksum(model.state_dict()) if isinstance(model, nn.Module) else None


def batch_digest(batch: Any) -> str:
    """SHA-256 of a batch (its tensors by dtype, shape and bytes, in a mapping's or sequence's order)."""
    return payload_checksum(batch)


class EvalProgress:
    """The progress file at ``path`` for the evaluation described by ``fingerprint`` (plain data)."""

    def __init__(self, path: str | Path, fingerprint: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.fingerprint = dict(fingerprint)
        self.digests: list[str | None] = []  # per batch index; None for an empty batch
        self.state: dict[str, Any] = {}
        self._seen = 0  # batches the data has given in this run

    @property
    def batches(self) -> int:
        """Batches done (the next batch index to attack)."""
        return len(self.digests)

    def load(self) -> bool:
        """Reads the file if there is one; False when there is none. Raises :class:`EvalProgressMismatch` when
        it belongs to another evaluation, :class:`advfast.runtime.CheckpointError` when it is corrupt."""
        if not self.path.exists():
            return False
        record = load_checkpoint(self.path, role=ROLE, required=("fingerprint", "digests", "state"))
        saved = record["fingerprint"]
        keys = set(saved) | set(self.fingerprint)
        differ = sorted(key for key in keys if saved.get(key) != self.fingerprint.get(key))
        if differ:
            raise EvalProgressMismatch(
                f"{self.path} holds the progress of another evaluation (it differs in {', '.join(differ)}); "
                "remove it to start afresh, or write this evaluation elsewhere"
            )
        self.digests = list(record["digests"])
        self.state = dict(record["state"])
        return True

    def skips(self, index: int, digest: str | None) -> bool:
        """Whether batch ``index`` (of digest ``digest``) is done already. Raises
        :class:`EvalProgressMismatch` when the file holds a different batch at that index."""
        self._seen = max(self._seen, index + 1)
        if index >= self.batches:
            return False
        if self.digests[index] != digest:
            raise EvalProgressMismatch(
                f"{self.path}: batch {index} of the data differs from the one this progress file evaluated "
                "(other data, order or limit); remove it to start afresh, or write this evaluation elsewhere"
            )
        return True

    def check_complete(self) -> None:
        """After the last batch: the data must have given every batch the file holds."""
        if self._seen < self.batches:
            raise EvalProgressMismatch(
                f"{self.path}: the data gave {self._seen} batches, fewer than the {self.batches} this progress "
                "file evaluated; remove it to start afresh, or write this evaluation elsewhere"
            )

    def save(self, digest: str | None, state: Mapping[str, Any], columns: Columns | None = None,
             samples: int = 0) -> None:  # fmt: skip
        """Records one more batch done: ``state`` (tensors and plain data) and, with ``columns``, their first
        ``samples`` rows."""
        self.digests.append(digest)
        kept = {} if columns is None else {name: columns.take(name, samples) for name in columns.data}
        self.state = {**state, "samples": samples, "columns": kept}
        payload = {"fingerprint": self.fingerprint, "digests": self.digests, "state": self.state}
        save_checkpoint(self.path, payload, role=ROLE)

    def restore(self, columns: Columns) -> int:
        """Puts the saved columns back into ``columns``; returns the samples done."""
        samples = int(self.state.get("samples", 0))
        for name, values in self.state.get("columns", {}).items():
            columns.put(name, 0, values)
        return samples


__all__ = ["ROLE", "EvalProgress", "EvalProgressMismatch", "batch_digest", "model_digest"]
