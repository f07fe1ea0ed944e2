"""The adversarial-training loop for image classifiers: pluggable objectives on the shared run loop."""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from advfast.attacks import pgd
from advfast.data import DataSplits, load_dataset, standard_eps
from advfast.models import build_model, default_model_name
from advfast.runtime import distributed as dist_utils
from advfast.runtime.checkpoint import CheckpointError, check_finite_state
from advfast.runtime.loop import RunLoop, Stop, StopReason
from advfast.train.config import TrainConfig
from advfast.train.health import diagnose
from advfast.train.objectives import make_objective
from advfast.train.schedules import learning_rate_factor, ramp

CHECKPOINT = "last.pt"
# Fields of a metrics record that measure time (they differ between otherwise identical runs).
TIMING_FIELDS = ("epoch_seconds", "val_seconds", "samples_per_second")


class Trainer(RunLoop):
    """Trains ``model`` (default: the reference network for the data) with ``config.method``.

    Under ``torchrun --nproc_per_node=N`` each process trains on its shard of every global batch inside
    DistributedDataParallel; rank 0 alone writes logs and checkpoints. Runs are exactly reproducible from
    ``config.seed`` (see :mod:`advfast.runtime.loop`), which also makes a resumed run equal an uninterrupted one.
    """

    role = "classifier"
    config_class = TrainConfig
    checkpoint_file = CHECKPOINT

    def __init__(self, config: TrainConfig, *, model: nn.Module | None = None, data: DataSplits | None = None):
        ctx = dist_utils.setup(config.device)
        self.data = data if data is not None else load_dataset(config.data, subset=config.subset, seed=config.seed)
        if len(self.data.train) < config.batch_size:
            raise ValueError(
                f"the training split has {len(self.data.train)} samples, fewer than one batch of {config.batch_size}"
            )
        config = config.resolve(
            eps=standard_eps(self.data.name, config.norm), model=default_model_name(self.data.input_shape)
        )
        super().__init__(config, ctx)
        torch.manual_seed(config.seed)
        if model is None:
            assert config.model is not None
            self.model_name = config.model
            model = build_model(self.model_name, self.data.num_classes, self.data.input_shape)
        else:
            self.model_name = type(model).__name__
        self.model = model.to(ctx.device)
        self._check_model_outputs()
        self.objective = make_objective(config)
        self.optimizer = self._make_optimizer()
        if config.amp == "fp16" and ctx.device.type != "cuda":
            raise ValueError("amp fp16 needs a CUDA device; use amp bf16 on the CPU")
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=config.amp == "fp16")
        self.train_model: nn.Module = self.model
        if ctx.distributed:
            device_ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=device_ids)
        self.loader = dist_utils.make_loader(
            self.data.train, config.batch_size, ctx, shuffle=True, seed=config.seed, drop_last=True
        )
        self._batches = len(self.loader)  # per rank and epoch
        self.augmenter = self._make_augmenter()
        self.sums = [0.0, 0.0, 0.0]  # this rank's (loss x samples, correct, samples) over the epoch so far
        self.guard_best: float | None = None
        self.guard_best_epoch = 0
        self.guard_state: dict[str, torch.Tensor] | None = None
        self.warnings: list[str] = []

    config: TrainConfig

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
        if c.augment is None:
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

    def description(self) -> str:
        return f"{self.config.method} {self.data.name}"

    def needed_bytes(self) -> int:
        # A checkpoint holds the weights up to four times (model, Adam's two moments, the guard's copy); an
        # atomic save needs the old file and the new one at once.
        weights = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        return 8 * weights + 2**20

    # ---- one batch --------------------------------------------------------------------------------------

    def start_epoch(self) -> None:
        self.model.train()

    def train_batch(self, batch: Any, seed: int) -> bool:
        """One batch: its objective's replays, each a backward pass; returns whether the optimizer stepped."""
        c, p = self.config, self.progress
        x, y = batch[0].to(self.ctx.device), batch[1].to(self.ctx.device)
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
        self.sums[0] += loss.item() * len(y)
        self.sums[1] += (out.logits.argmax(dim=1) == y).sum().item()
        self.sums[2] += len(y)
        return stepped

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.amp == "bf16" else torch.float16
        return torch.autocast(self.ctx.device.type, dtype=dtype)

    # ---- end of an epoch --------------------------------------------------------------------------------

    def epoch_record(self, seconds: float) -> dict[str, Any]:
        c, p = self.config, self.progress
        loss_sum, correct, seen = dist_utils.all_reduce_sum(self.sums, self.ctx)
        self.sums = [0.0, 0.0, 0.0]
        started = time.perf_counter()
        val_clean, val_robust = self.validate()
        return {
            "epoch": p.epoch + 1,
            "step": p.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "eps": c.eps * ramp(max(p.step - 1, 0), self.total_steps, c.eps_warmup),
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen,
            "val_clean_acc": val_clean,
            "val_robust_acc": val_robust,
            "epoch_seconds": seconds,
            "val_seconds": time.perf_counter() - started,
            "samples_per_second": seen / seconds if seconds > 0 else None,
        }

    def after_epoch(self, record: dict[str, Any]) -> None:
        """Wong et al.'s early stop: when validation PGD accuracy falls by more than the guard below its best,
        robustness has collapsed (catastrophic overfitting); restore the best weights and stop."""
        guard, p, val_robust = self.config.overfit_guard, self.progress, record["val_robust_acc"]
        if not guard or val_robust is None:
            return
        if self.guard_best is None or val_robust >= self.guard_best:
            self.guard_best, self.guard_best_epoch = val_robust, p.epoch
            self.guard_state = copy.deepcopy(self.model.state_dict())
        elif val_robust < self.guard_best - guard and self.guard_state is not None:
            self.model.load_state_dict(self.guard_state)
            p.stop = Stop(
                StopReason.COLLAPSED,
                f"catastrophic overfitting: validation PGD accuracy fell from {self.guard_best:.3f} (epoch "
                f"{self.guard_best_epoch}) to {val_robust:.3f}; restored the weights of epoch {self.guard_best_epoch}",
            )

    @torch.no_grad()
    def _correct(self, x: torch.Tensor, y: torch.Tensor) -> float:
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
            clean += self._correct(x, y)
            if c.eps > 0:
                x_adv = pgd(
                    self.model, x, y, eps=c.eps, steps=c.val_steps, norm=c.norm, early_stop=True, generator=generator
                )
                robust += self._correct(x_adv, y)
        self.model.train()
        clean, robust = dist_utils.all_reduce_sum([clean, robust], ctx)
        return clean / n, (robust / n if c.eps > 0 else None)

    # ---- after training ---------------------------------------------------------------------------------

    def finish(self) -> None:
        """Say what went wrong, if anything did; write the report when the run reached its end."""
        p = self.progress
        self.warnings = diagnose(p.metrics, self.data.num_classes)
        for warning in self.warnings:
            self.say(f"warning: {warning}")
        ended = p.stop is None or p.stop.reason is StopReason.COLLAPSED
        if self.config.report and ended and self.ctx.is_main:
            self.write_report()

    def write_report(self, attacks: Sequence[str] | None = None) -> dict[str, Path]:
        """The run folder's report: test robustness at ``eval_eps`` under ``attacks`` (names of the attack
        registry, advfast.eval.attacks; default ``config.eval_attacks``, e.g. ``["fgsm", "pgd", "autoattack"]``),
        training curves, cost per epoch."""
        attacks = list(attacks if attacks is not None else self.config.eval_attacks)
        from advfast.eval import get_attack, published_for, report_run  # the eval layer is only needed here

        c, p = self.config, self.progress
        names = ", ".join(get_attack(name).name for name in attacks)
        self.say(
            f"test report: {names} (PGD-{c.eval_steps}) at eps {', '.join(f'{e:g}' for e in c.eval_eps or [])} "
            f"on {len(self.data.test)} test samples"
        )
        extra = {
            "stopped": None if p.stop is None else str(p.stop),
            "world_size": self.ctx.world_size,
            "warnings": self.warnings,
        }
        return report_run(
            self.model, self.data, self.out, title=f"{c.method} on {self.data.name}, eps {c.eps:g} ({c.norm})",
            eps=list(c.eval_eps or []), norm=c.norm, steps=c.eval_steps, restarts=c.eval_restarts,
            attacks=list(attacks), seed=c.seed,
            published=published_for(self.data.name, c.method, c.eps, c.norm), config=c.to_dict(),
            metrics=p.metrics, extra=extra, progress=c.progress, say=self.say,
        )  # fmt: skip

    # ---- checkpoints ------------------------------------------------------------------------------------

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "num_classes": self.data.num_classes,
            "input_shape": list(self.data.input_shape),
            "data": self.data.describe(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "guard": {"best": self.guard_best, "epoch": self.guard_best_epoch, "state": self.guard_state},
        }

    def rank_state(self) -> dict[str, Any]:
        return {"sums": list(self.sums), "objective": self.objective.state_dict()}

    def required_keys(self) -> tuple[str, ...]:
        return ("model", "optimizer", "scaler", "guard")

    def load_state(self, record: dict[str, Any], rank_state: dict[str, Any], path: Path) -> None:
        check_finite_state(record["model"], path)
        try:
            self.model.load_state_dict(record["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: written for a different model: {str(exc).splitlines()[0]}") from None
        self.optimizer.load_state_dict(record["optimizer"])
        self.scaler.load_state_dict(record["scaler"])
        self.objective.load_state_dict(rank_state.get("objective", {}))
        self.sums = list(rank_state.get("sums", [0.0, 0.0, 0.0]))
        guard = record["guard"]
        self.guard_best, self.guard_best_epoch, self.guard_state = guard["best"], guard["epoch"], guard["state"]
