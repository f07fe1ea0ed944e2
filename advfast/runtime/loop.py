"""The run loop every trainer shares: epochs of batches, per-batch seeding, stops on signals and step limits,
atomic checkpoints, ``metrics.jsonl``, exact resume, torchrun, progress.

A trainer subclasses :class:`RunLoop` and supplies the parts that are its own: what one batch does
(:meth:`RunLoop.train_batch`), the end-of-epoch record (:meth:`RunLoop.epoch_record`), its state in the
checkpoint, and what happens once training ends (:meth:`RunLoop.finish`). Everything else is here, once:

- the run folder (:class:`~advfast.runtime.RunFolder`) is taken before any work: locked, checked writable and
  large enough, cleaned of temporaries; every file goes into it, whatever a checkpoint recorded;
- before every batch torch's random state is reseeded from ``derive_seed(seed, rank, epoch, batch)``, and the
  data order comes from (seed, epoch): a resumed run equals an uninterrupted one exactly;
- Ctrl-C / SIGTERM (on any process) and ``max_steps`` stop every process at the same step boundary, after a
  checkpoint; ``checkpoint_every`` saves on the way;
- rank 0 alone writes; every rank's own running state (sums, carried perturbations) is gathered into the
  checkpoint.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from advfast.runtime import distributed as dist_utils
from advfast.runtime.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from advfast.runtime.config import RunConfig
from advfast.runtime.files import atomic_write_text
from advfast.runtime.run_folder import RunFolder, RunFolderError
from advfast.runtime.seeds import derive_seed
from advfast.runtime.signals import StopRequest, stop_on_signals


class StopReason(enum.Enum):
    """Why a run stopped before its last epoch. ``SIGNAL`` and ``MAX_STEPS`` runs continue with ``--resume``;
    ``COLLAPSED`` ends the run for good (a guard restored the best weights)."""

    SIGNAL = "signal"
    MAX_STEPS = "max_steps"
    COLLAPSED = "collapsed"

    @property
    def resumable(self) -> bool:
        return self is not StopReason.COLLAPSED


@dataclass
class Stop:
    reason: StopReason
    detail: str

    def __str__(self) -> str:
        return self.detail


@dataclass
class Progress:
    """Where the run is: ``batch`` counts the batches done in ``epoch``; ``metrics`` holds one record per epoch."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)
    stop: Stop | None = None


def checkpoint_path(run: str | Path, name: str) -> Path:
    """The checkpoint of a run given as its folder or as the checkpoint file itself."""
    run = Path(run)
    return run / name if run.is_dir() else run


class RunLoop:
    """Base of the trainers. Subclasses set the class attributes and implement the hooks."""

    role: ClassVar[str]  # checkpoint role, e.g. "classifier"
    config_class: ClassVar[type[RunConfig]]
    checkpoint_file: ClassVar[str] = "last.pt"
    config_file: ClassVar[str] = "config.json"
    metrics_file: ClassVar[str] = "metrics.jsonl"

    def __init__(self, config: RunConfig, ctx: dist_utils.DistContext) -> None:
        self.config = config
        self.ctx = ctx
        self.folder = RunFolder(config.out)
        self.progress = Progress()
        self.resumed = False
        self._saved_at: tuple[int, int, int] | None = None

    @property
    def out(self) -> Path:
        return self.folder.path

    # ---- hooks ------------------------------------------------------------------------------------------

    loader: Any  # a DataLoader over a ShardSampler (set by the subclass)

    def description(self) -> str:
        """The progress bar's label."""
        return type(self).__name__

    def train_batch(self, batch: Any, seed: int) -> bool:
        """One batch (torch already seeded with ``seed``); advance ``progress.step`` per optimizer step and
        return whether the optimizer stepped."""
        raise NotImplementedError

    def start_epoch(self) -> None:
        """Before the epoch's first batch (e.g. put the model in train mode)."""

    def epoch_record(self, seconds: float) -> dict[str, Any]:
        """The epoch's line of ``metrics.jsonl`` (and reset per-epoch sums); may set ``progress.stop``."""
        raise NotImplementedError

    def after_epoch(self, record: dict[str, Any]) -> None:
        """After the epoch was counted and logged, before its checkpoint (guards, sample grids)."""

    def checkpoint_state(self) -> dict[str, Any]:
        """The subclass's part of the checkpoint (weights, optimizer, ...)."""
        raise NotImplementedError

    def rank_state(self) -> dict[str, Any]:
        """This process's own running state, gathered from every rank into the checkpoint."""
        return {}

    def load_state(self, record: dict[str, Any], rank_state: dict[str, Any], path: Path) -> None:
        """Restore the subclass's part from a checkpoint ``record`` (and this rank's ``rank_state``)."""
        raise NotImplementedError

    def required_keys(self) -> tuple[str, ...]:
        """Keys a checkpoint of this role must hold."""
        return ()

    def needed_bytes(self) -> int:
        """Disk space the run needs in its folder (checked before the first batch)."""
        return 0

    def finish(self) -> None:
        """After the last epoch, or after a stop (``progress.stop``): reports, final sample grids."""

    # ---- the loop ---------------------------------------------------------------------------------------

    def fit(self) -> list[dict[str, Any]]:
        """Train to ``config.epochs`` from where the run is; returns the per-epoch metrics."""
        c, p = self.config, self.progress
        self._take_folder()
        try:
            if self.ctx.is_main:
                atomic_write_text(self.out / self.config_file, c.to_json())
                # A resumed run drops the lines written after its checkpoint.
                atomic_write_text(self.out / self.metrics_file, "".join(_json_line(m) for m in p.metrics))
            batches = len(self.loader)
            bar = tqdm(
                total=c.epochs * batches, initial=p.epoch * batches + p.batch, unit="batch",
                desc=self.description(), disable=not (c.progress and self.ctx.is_main), dynamic_ncols=True,
            )  # fmt: skip
            p.stop = None
            if c.max_steps and p.step >= c.max_steps:
                # A run resumed at its step limit takes no step (the check below comes after each step).
                p.stop = Stop(StopReason.MAX_STEPS, f"max_steps {c.max_steps} reached")
            with stop_on_signals() as signals, bar:
                while p.epoch < c.epochs and p.stop is None:
                    self._run_epoch(bar, signals)
            if self._saved_at != self._position():
                self.save()
            self.finish()
        finally:
            self.folder.release()
        return p.metrics

    def _take_folder(self) -> None:
        """Rank 0 takes the run folder; every rank learns whether it could (so none waits for a failed one)."""
        error: RunFolderError | None = None
        if self.ctx.is_main:
            try:
                self.folder.acquire(self.needed_bytes())
                if not self.resumed and (self.out / self.checkpoint_file).exists():
                    self.folder.release()
                    raise RunFolderError(
                        f"{self.out} already holds a run ({self.checkpoint_file}); continue it with --resume "
                        f"{self.out}, or choose another folder"
                    )
            except RunFolderError as exc:
                error = exc
        if dist_utils.any_rank(error is not None, self.ctx):
            raise error or RunFolderError(f"rank 0 could not take the run folder {self.out}")

    def _run_epoch(self, bar: tqdm, signals: StopRequest) -> None:
        c, p, ctx = self.config, self.progress, self.ctx
        self.loader.sampler.set_epoch(p.epoch, start=p.batch * self.loader.batch_size)
        self.start_epoch()
        started = time.perf_counter()
        for batch in self.loader:
            seed = derive_seed(c.seed, ctx.rank, p.epoch, p.batch)
            torch.manual_seed(seed)
            stepped = self.train_batch(batch, seed)
            p.batch += 1
            bar.update(1)
            if not stepped:
                continue
            if c.checkpoint_every and p.step % c.checkpoint_every == 0:
                self.save()
            signalled = dist_utils.any_rank(bool(signals), ctx)
            if signalled or (c.max_steps and p.step >= c.max_steps):
                if signalled:
                    p.stop = Stop(StopReason.SIGNAL, f"signal {signals.signal or 'on another process'}")
                else:
                    p.stop = Stop(StopReason.MAX_STEPS, f"max_steps {c.max_steps} reached")
                return
        record = self.epoch_record(time.perf_counter() - started)
        p.metrics.append(record)
        p.epoch += 1
        p.batch = 0
        if ctx.is_main:
            with (self.out / self.metrics_file).open("a") as f:
                f.write(_json_line(record))
            self.say(f"epoch {p.epoch}/{c.epochs}: " + _summary(record))
        self.after_epoch(record)
        if p.stop is not None:
            self.say(f"stopped: {p.stop}")
        self.save()

    def say(self, line: str) -> None:
        """A line for the user (rank 0 only), printed above the progress bar when there is one."""
        if not self.ctx.is_main:
            return
        if self.config.progress:
            tqdm.write(line)
        else:
            print(line, flush=True)

    # ---- checkpoints ------------------------------------------------------------------------------------

    def save(self) -> None:
        """Rank 0 writes the checkpoint atomically; every rank must call (their states are gathered)."""
        per_rank = dist_utils.gather_objects(_to_cpu(self.rank_state()), self.ctx)
        if self.ctx.is_main:
            p = self.progress
            stop = None if p.stop is None else {"reason": p.stop.reason.value, "detail": p.stop.detail}
            payload = {
                "config": self.config.to_dict(),
                "progress": {"epoch": p.epoch, "batch": p.batch, "step": p.step, "stop": stop},
                "metrics": p.metrics,
                "per_rank": per_rank,
                **self.checkpoint_state(),
            }
            save_checkpoint(self.out / self.checkpoint_file, payload, role=self.role)
        self._saved_at = self._position()
        dist_utils.barrier(self.ctx)

    def _position(self) -> tuple[int, int, int]:
        return (self.progress.epoch, self.progress.batch, self.progress.step)

    def load(self, path: str | Path) -> None:
        """Continue exactly where the checkpoint at ``path`` left off."""
        path = Path(path)
        record = load_checkpoint(
            path, map_location=self.ctx.device, role=self.role,
            required=("config", "progress", "metrics", "per_rank", *self.required_keys()),
        )  # fmt: skip
        progress, per_rank = record["progress"], record["per_rank"]
        if progress["batch"] and len(per_rank) != self.ctx.world_size:
            raise CheckpointError(
                f"{path}: saved mid-epoch by {len(per_rank)} processes; resume it with as many "
                f"(this job has {self.ctx.world_size}), or from an end-of-epoch checkpoint"
            )
        mine = per_rank[self.ctx.rank] if self.ctx.rank < len(per_rank) else {}
        self.load_state(record, _to_device(mine, self.ctx.device), path)
        self.progress = Progress(
            epoch=progress["epoch"], batch=progress["batch"], step=progress["step"], metrics=list(record["metrics"])
        )
        self.resumed = True
        self._saved_at = self._position()

    @classmethod
    def resume(cls, run: str | Path, **overrides: Any) -> RunLoop:
        """A trainer that continues the run in folder ``run`` (or from the checkpoint file ``run``), writing
        into that folder whatever the checkpoint recorded: its config with ``overrides`` (more epochs, say)."""
        path = checkpoint_path(run, cls.checkpoint_file)
        if not path.is_file():
            raise CheckpointError(f"{run}: no {cls.checkpoint_file} to resume (is it a run folder of this kind?)")
        record = load_checkpoint(path, role=cls.role, required=("config",))
        config = cls.config_class.from_dict({**record["config"], **overrides, "out": str(path.parent)})
        trainer = cls(config)  # type: ignore[call-arg]
        trainer.load(path)
        return trainer


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(record) + "\n"


def _summary(record: dict[str, Any]) -> str:
    """``train_loss 0.52, val_clean_acc 0.97, ... (6.4 s)`` for the per-epoch line."""
    skip = {"epoch", "step", "samples_per_second"}
    parts = [
        f"{k} {v:.4g}"
        for k, v in record.items()
        if k not in skip and not k.endswith("_seconds") and isinstance(v, int | float)
    ]
    seconds = record.get("epoch_seconds")
    return ", ".join(parts) + (f" ({seconds:.1f} s)" if isinstance(seconds, int | float) else "")


def _to_cpu(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: _to_cpu(v) for k, v in state.items()}
    return state


def _to_device(state: Any, device: torch.device) -> Any:
    if isinstance(state, torch.Tensor):
        return state.to(device)
    if isinstance(state, dict):
        return {k: _to_device(v, device) for k, v in state.items()}
    return state
