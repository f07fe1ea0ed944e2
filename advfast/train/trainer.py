"""The adversarial-training loop: one trainer, pluggable objectives, checkpoints, exact resume, torchrun."""

from __future__ import annotations

import contextlib
import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from advfast.attacks import pgd
from advfast.data import DataSplits, load_dataset
from advfast.models import build_model, default_model_name
from advfast.runtime import distributed as dist_utils
from advfast.runtime.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from advfast.runtime.signals import StopRequest, stop_on_signals
from advfast.train.config import TrainConfig
from advfast.train.objectives import AttackSettings, make_objective
from advfast.train.schedules import learning_rate_factor, ramp

TIMING_FIELDS = ("epoch_seconds", "samples_per_second")


@dataclass
class Progress:
    """Where the run is. ``batch`` counts the batches done in ``epoch``; ``sums`` are this rank's running
    (loss x samples, correct, samples) over the epoch so far."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    metrics: list[dict[str, Any]] = field(default_factory=list)
    guard_best: float | None = None
    guard_best_epoch: int = 0
    stopped: str | None = None


class Trainer:
    """Trains ``model`` (default: the reference network for the data) with ``config.method``.

    Under ``torchrun --nproc_per_node=N`` each process trains on its shard of every global batch inside
    DistributedDataParallel; rank 0 alone writes logs and checkpoints. Runs are exactly reproducible from
    ``config.seed``: the data order comes from (seed, epoch) and torch's random state is reseeded from
    (seed, rank, epoch, batch) before every batch, which also makes a resumed run equal an uninterrupted one.
    """

    def __init__(self, config: TrainConfig, *, model: nn.Module | None = None, data: DataSplits | None = None):
        self.config = config
        self.ctx = dist_utils.setup(config.device)
        self.data = data if data is not None else load_dataset(config.data, subset=config.subset, seed=config.seed)
        if len(self.data.train) < config.batch_size:
            raise ValueError(
                f"the training split has {len(self.data.train)} samples, fewer than one batch of {config.batch_size}"
            )
        torch.manual_seed(config.seed)
        if model is None:
            self.model_name = config.model if config.model != "auto" else default_model_name(self.data.input_shape)
            model = build_model(self.model_name, self.data.num_classes, self.data.input_shape)
        else:
            self.model_name = type(model).__name__
        self.model = model.to(self.ctx.device)
        self._check_model_outputs()
        attack = AttackSettings(
            eps=config.eps,
            alpha=config.alpha,
            steps=config.steps,
            norm=config.norm,
            model_mode=config.resolved_attack_mode,
        )
        self.objective = make_objective(
            config.method,
            attack,
            lam=config.lam,
            inner=config.inner,
            beta=config.beta,
            replays=config.replays,
        )
        self.optimizer = self._make_optimizer()
        self.scaler = torch.amp.GradScaler(self.ctx.device.type, enabled=config.amp == "fp16")
        if config.amp == "fp16" and self.ctx.device.type != "cuda":
            raise ValueError("amp fp16 needs a CUDA device; use amp bf16 on the CPU")
        self.train_model: nn.Module = self.model
        if self.ctx.distributed:
            device_ids = [self.ctx.local_rank] if self.ctx.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=device_ids)
        self.loader = dist_utils.make_loader(
            self.data.train, config.batch_size, self.ctx, shuffle=True, seed=config.seed, drop_last=True
        )
        self._batches = len(self.loader)  # per rank and epoch
        self.augmenter = self._make_augmenter()
        self.out = Path(config.out)
        self.progress = Progress()
        self._guard_state: dict[str, torch.Tensor] | None = None

    # ---- set-up ----------------------------------------------------------------------------------------

    def _check_model_outputs(self) -> None:
        sample = self.data.train.x[:2].to(self.ctx.device)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            logits = self.model(sample)
        self.model.train(was_training)
        if logits.dim() != 2 or logits.shape[1] != self.data.num_classes:
            raise ValueError(
                f"the model returns shape {tuple(logits.shape)} for 2 samples but the data has "
                f"{self.data.num_classes} classes: expected [2, {self.data.num_classes}]"
            )

    def _make_augmenter(self):
        """Generated samples for every batch, when ``config.augment`` names a generator checkpoint."""
        c = self.config
        if not c.augment:
            return None
        from advfast.gan import BatchAugmenter, check_compatible, load  # only needed with augmentation

        sampler = load(c.augment, self.ctx.device)
        check_compatible(sampler, self.data.input_shape, self.data.num_classes, c.augment)
        return BatchAugmenter(
            sampler, c.synthetic_ratio, adversarial=c.synthetic_adversarial, eps=c.eps, steps=c.steps, norm=c.norm
        )

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        if c.optimizer == "sgd":
            return torch.optim.SGD(self.model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        return torch.optim.Adam(self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay)

    @property
    def total_steps(self) -> int:
        steps_per_epoch = -(-self._batches // self.config.accumulate) * self.objective.replays
        return self.config.epochs * steps_per_epoch

    # ---- the loop --------------------------------------------------------------------------------------

    def fit(self) -> list[dict[str, Any]]:
        """Train to ``config.epochs`` (from where a resumed run stopped); returns the per-epoch metrics."""
        c, p, ctx = self.config, self.progress, self.ctx
        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(c.to_dict(), indent=2) + "\n")
            self._rewrite_metrics()
        bar = tqdm(
            total=c.epochs * self._batches,
            initial=p.epoch * self._batches + p.batch,
            unit="batch",
            desc=f"{c.method} {self.data.name}",
            disable=not (c.progress and ctx.is_main),
            dynamic_ncols=True,
        )
        with stop_on_signals() as stop, bar:
            while p.epoch < c.epochs and p.stopped is None:
                self._run_epoch(bar, stop)
        self.save("last.pt")
        finished = p.stopped is None or p.stopped.startswith("catastrophic")
        if c.report and finished and ctx.is_main:
            self.write_report()
        return p.metrics

    def write_report(self) -> None:
        """The run folder's report: test robustness at ``eval_eps``, training curves, cost per epoch."""
        from advfast.train.evaluation import report_run  # the eval layer is only needed here

        c = self.config
        extra = {"stopped": self.progress.stopped, "world_size": self.ctx.world_size}
        report_run(
            self.model, self.data, c, self.out, eps=c.resolved_eval_eps, steps=c.eval_steps,
            restarts=c.eval_restarts, metrics=self.progress.metrics, extra=extra, progress=c.progress,
        )  # fmt: skip

    def _run_epoch(self, bar: tqdm, stop: StopRequest) -> None:
        c, p = self.config, self.progress
        self.loader.sampler.set_epoch(p.epoch, start=p.batch * self.loader.batch_size)
        self.model.train()
        started = time.perf_counter()
        for x, y in self.loader:
            stepped = self._train_batch(x.to(self.ctx.device), y.to(self.ctx.device))
            p.batch += 1
            bar.update(1)
            if stepped and c.checkpoint_every and p.step % c.checkpoint_every == 0:
                self.save("last.pt")
            if not stepped:
                continue
            signalled = dist_utils.any_rank(bool(stop), self.ctx)
            if signalled or (c.max_steps and p.step >= c.max_steps):
                p.stopped = f"signal {stop.signal or 'on another process'}" if signalled else f"max_steps {c.max_steps}"
                self.save("last.pt")
                return
        self._end_epoch(time.perf_counter() - started)
        bar.set_postfix({k: f"{v:.3f}" for k, v in p.metrics[-1].items() if k.endswith("acc") and v is not None})

    def _step_seed(self) -> int:
        p = self.progress
        return (((self.config.seed * 1_000_003 + self.ctx.rank) * 1_000_033 + p.epoch) * 1_000_037 + p.batch) % 2**62

    def _train_batch(self, x: torch.Tensor, y: torch.Tensor) -> bool:
        """One batch: its objective's replays, each a backward pass; returns whether the optimizer stepped."""
        c, p = self.config, self.progress
        seed = self._step_seed()
        torch.manual_seed(seed)
        generator = torch.Generator(device=self.ctx.device).manual_seed(seed)
        eps = c.eps * ramp(p.step, self.total_steps, c.eps_warmup)
        if self.augmenter is not None:
            self.augmenter.eps = eps
            x, y = self.augmenter(self.model, x, y, generator)
        last_of_group = (p.batch + 1) % c.accumulate == 0 or p.batch + 1 == self._batches
        stepped = False
        for _ in range(self.objective.replays):
            lr = c.lr * learning_rate_factor(c.schedule, p.step, self.total_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            no_sync = self.ctx.distributed and not last_of_group
            with self.train_model.no_sync() if no_sync else contextlib.nullcontext(), self._autocast():
                out = self.objective(self.train_model, x, y, eps=eps, generator=generator, attack_model=self.model)
                loss = out.loss.float()
            if not torch.isfinite(loss) and c.amp != "fp16":
                raise FloatingPointError(
                    f"training diverged: the loss is {loss.item()} at step {p.step} (epoch {p.epoch + 1}); "
                    "lower lr, or ramp eps up with eps_warmup"
                )
            self.scaler.scale(loss / c.accumulate).backward()
            self.objective.after_backward()
            if last_of_group:
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                p.step += 1
                stepped = True
        p.sums[0] += loss.item() * len(y)
        p.sums[1] += (out.logits.argmax(dim=1) == y).sum().item()
        p.sums[2] += len(y)
        return stepped

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.amp == "bf16" else torch.float16
        return torch.autocast(self.ctx.device.type, dtype=dtype)

    def _end_epoch(self, seconds: float) -> None:
        c, p = self.config, self.progress
        loss_sum, correct, seen = dist_utils.all_reduce_sum(p.sums, self.ctx)
        val_clean, val_robust = self.validate()
        record = {
            "epoch": p.epoch + 1,
            "step": p.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "eps": c.eps * ramp(max(p.step - 1, 0), self.total_steps, c.eps_warmup),
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen,
            "val_clean_acc": val_clean,
            "val_robust_acc": val_robust,
            "epoch_seconds": seconds,
            "samples_per_second": seen / seconds if seconds > 0 else None,
        }
        p.metrics.append(record)
        p.epoch += 1
        p.batch = 0
        p.sums = [0.0, 0.0, 0.0]
        self._check_overfitting(val_robust)
        if self.ctx.is_main:
            with (self.out / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
        self.save("last.pt")

    def _check_overfitting(self, val_robust: float | None) -> None:
        """Wong et al.'s early stop: when validation PGD accuracy falls by more than the guard below its best,
        robustness has collapsed (catastrophic overfitting); restore the best weights and stop."""
        guard, p = self.config.resolved_overfit_guard, self.progress
        if guard is None or val_robust is None:
            return
        if p.guard_best is None or val_robust >= p.guard_best:
            p.guard_best, p.guard_best_epoch = val_robust, p.epoch
            self._guard_state = copy.deepcopy(self.model.state_dict())
        elif val_robust < p.guard_best - guard and self._guard_state is not None:
            self.model.load_state_dict(self._guard_state)
            p.stopped = (
                f"catastrophic overfitting: validation PGD accuracy fell from {p.guard_best:.3f} (epoch "
                f"{p.guard_best_epoch}) to {val_robust:.3f}; restored the weights of epoch {p.guard_best_epoch}"
            )
            tqdm.write(p.stopped)

    @torch.no_grad()
    def _accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return (self.model(x).argmax(dim=1) == y).sum().item()

    def validate(self) -> tuple[float | None, float | None]:
        """Clean and PGD accuracy (eps, ``val_steps`` steps, early stop) on the first ``val_size`` validation
        samples, each rank taking every N-th sample; the model is left in train mode."""
        c, ctx = self.config, self.ctx
        n = min(c.val_size, len(self.data.val))
        if n == 0:
            return None, None
        x_all, y_all = (
            self.data.val.x[:n][ctx.rank :: ctx.world_size],
            self.data.val.y[:n][ctx.rank :: ctx.world_size],
        )
        self.model.eval()
        clean = robust = 0.0
        generator = torch.Generator(device=ctx.device).manual_seed(c.seed + 17)
        for start in range(0, len(x_all), 500):
            x = x_all[start : start + 500].to(ctx.device)
            y = y_all[start : start + 500].to(ctx.device)
            clean += self._accuracy(x, y)
            if c.eps > 0:
                x_adv = pgd(
                    self.model, x, y, eps=c.eps, steps=c.val_steps, norm=c.norm, early_stop=True, generator=generator
                )
                robust += self._accuracy(x_adv, y)
        self.model.train()
        clean, robust = dist_utils.all_reduce_sum([clean, robust], ctx)
        return clean / n, (robust / n if c.eps > 0 else None)

    # ---- checkpoints -----------------------------------------------------------------------------------

    def save(self, name: str) -> None:
        """Rank 0 writes the checkpoint (atomically); every rank must call (their states are gathered)."""
        per_rank = dist_utils.gather_objects(
            {"sums": list(self.progress.sums), "objective": _to_cpu(self.objective.state_dict())}, self.ctx
        )
        if self.ctx.is_main:
            p = self.progress
            save_checkpoint(
                self.out / name,
                {
                    "config": self.config.to_dict(),
                    "model_name": self.model_name,
                    "num_classes": self.data.num_classes,
                    "input_shape": list(self.data.input_shape),
                    "data": self.data.describe(),
                    "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "progress": {"epoch": p.epoch, "batch": p.batch, "step": p.step, "stopped": p.stopped},
                    "per_rank": per_rank,
                    "metrics": p.metrics,
                    "guard": {"best": p.guard_best, "epoch": p.guard_best_epoch, "state": self._guard_state},
                },
            )
        dist_utils.barrier(self.ctx)

    def load(self, path: str | Path) -> None:
        """Continue exactly where the checkpoint at ``path`` left off."""
        record = load_checkpoint(path, map_location=self.ctx.device)
        try:
            self.model.load_state_dict(record["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: written for a different model: {str(exc).splitlines()[0]}") from None
        self.optimizer.load_state_dict(record["optimizer"])
        self.scaler.load_state_dict(record["scaler"])
        progress = record["progress"]
        per_rank = record["per_rank"]
        if progress["batch"] and len(per_rank) != self.ctx.world_size:
            raise CheckpointError(
                f"{path}: saved mid-epoch by {len(per_rank)} processes; resume it with as many "
                f"(this job has {self.ctx.world_size}), or from an end-of-epoch checkpoint"
            )
        mine = per_rank[self.ctx.rank] if self.ctx.rank < len(per_rank) else {"sums": [0.0] * 3, "objective": {}}
        self.objective.load_state_dict(_to_device(mine["objective"], self.ctx.device))
        guard = record["guard"]
        self.progress = Progress(
            epoch=progress["epoch"],
            batch=progress["batch"],
            step=progress["step"],
            sums=list(mine["sums"]),
            metrics=list(record["metrics"]),
            guard_best=guard["best"],
            guard_best_epoch=guard["epoch"],
            stopped=None,
        )
        self._guard_state = guard["state"]

    def _rewrite_metrics(self) -> None:
        """metrics.jsonl as of the current progress (a resumed run drops lines written after its checkpoint)."""
        lines = "".join(json.dumps(record) + "\n" for record in self.progress.metrics)
        (self.out / "metrics.jsonl").write_text(lines)

    @classmethod
    def resume(cls, path: str | Path, **overrides: Any) -> Trainer:
        """A trainer for the run saved at ``path`` (its config, with ``overrides`` such as more epochs)."""
        record = load_checkpoint(path)
        config = TrainConfig.from_dict({**record["config"], **overrides})
        trainer = cls(config)
        trainer.load(path)
        return trainer


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
