"""Fine-tuning a transformer classifier on a text data set, on the shared run loop: one adversary call per
batch, AdamW with linear warm-up and decay, per-epoch validation accuracy, checkpoints, exact resume, torchrun
DDP, health warnings and the final test report."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from advfast.data.text import TEXT_DATASETS, TextCollate, TextSplits, load_text_dataset, text_loader
from advfast.runtime import distributed as dist_utils
from advfast.runtime.checkpoint import CheckpointError, check_finite_state
from advfast.runtime.loop import RunLoop, StopReason
from advfast.text.adversaries import Adversary, make_adversary
from advfast.text.evaluation import clean_accuracy
from advfast.text.models import load_classifier, resolve_classifier_path
from advfast.text.training.config import TextTrainConfig
from advfast.text.training.schedule import LinearWarmupDecay
from advfast.text.training.standard import Standard
from advfast.train.health import diagnose

ROLE = "text-classifier"
CHECKPOINT = "last.pt"
ADVICE = "lower --lr or --eps, train for more epochs, or check the labels of the data"
# Fields of a metrics record that measure time (they differ between otherwise identical runs).
TIMING_FIELDS = ("epoch_seconds", "val_seconds", "samples_per_second")


def load_text_data(config: TextTrainConfig) -> TextSplits:
    """The run's data set, split by its split seed (the run's seed unless set; column names apply to files only)."""
    is_file = config.data not in TEXT_DATASETS
    columns = {"text_column": config.text_column, "label_column": config.label_column} if is_file else {}
    split_seed = config.seed if config.split_seed is None else config.split_seed
    return load_text_dataset(config.data, seed=split_seed, **columns)


def make_method(
    config: TextTrainConfig, model: nn.Module, tokenizer: Any, wrapper: nn.Module | None = None
) -> Adversary:
    """The adversary of ``config.method`` (``standard``: none, the plain loss) on ``model``, with the options
    the config sets; special tokens from ``tokenizer`` never move."""
    common = {"special_token_ids": getattr(tokenizer, "all_special_ids", None), "wrapper": wrapper}
    if config.method == "standard":
        return Standard(model, **common)
    return make_adversary(config.method, model, **config.adversary_options(), **common)


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW's parameter groups as in Hugging Face fine-tuning: no decay on biases and normalisation weights
    (every 1-D parameter)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


class TextTrainer(RunLoop):
    """Fine-tunes ``config.model`` on ``config.data`` with ``config.method``.

    Each optimizer step is one ``adversary.loss(batch)`` (its passes and backwards), gradient clipping, AdamW
    and the schedule's step. Under ``torchrun --nproc_per_node=N`` every process trains on its shard of each
    global batch inside DistributedDataParallel; the adversary runs all its passes but the last under
    ``no_sync()``, so gradients are all-reduced once per step. Runs are exactly reproducible from
    ``config.seed`` (per-batch seeds, seeded data order, a per-batch generator for the adversary's draws), so a
    resumed run equals an uninterrupted one.
    """

    role = ROLE
    config_class = TextTrainConfig
    checkpoint_file = CHECKPOINT

    def __init__(self, config: TextTrainConfig, *, data: TextSplits | None = None) -> None:
        if config.data not in TEXT_DATASETS and Path(config.data).is_file():
            # a file by its absolute path: the run's config and its evaluation work from any folder
            config = replace(config, data=str(Path(config.data).resolve()))
        ctx = dist_utils.setup(config.device)
        super().__init__(config, ctx)
        self.data = data if data is not None else load_text_data(config)
        if len(self.data.train) < config.batch_size:
            raise ValueError(
                f"the training split has {len(self.data.train)} examples, fewer than one batch of {config.batch_size}"
            )
        self.model_path = str(resolve_classifier_path(config.model).resolve())
        self.model, self.tokenizer = load_classifier(
            config.model, self.data.num_classes, seed=config.seed, device=ctx.device
        )
        self.model.train()
        self.train_model: nn.Module = self.model
        wrapper = None
        if ctx.distributed:
            device_ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
            self.train_model = wrapper = DistributedDataParallel(self.model, device_ids=device_ids)
        self.adversary = make_method(config, self.model, self.tokenizer, wrapper)
        self.config = config = config.resolve(self.adversary)
        self.optimizer = torch.optim.AdamW(weight_decay_groups(self.model, config.weight_decay), lr=config.lr)
        self.loader = dist_utils.make_loader(
            self.data.train, config.batch_size, ctx, shuffle=True, seed=config.seed, drop_last=True,
            collate_fn=TextCollate(self.tokenizer, config.max_length),
        )  # fmt: skip
        total = config.epochs * len(self.loader)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, LinearWarmupDecay(round(config.warmup * total), total)
        )
        self.sums = [0.0, 0.0]  # this rank's (loss x examples, examples) over the epoch so far
        self.warnings: list[str] = []

    config: TextTrainConfig

    def description(self) -> str:
        return f"{self.config.method} {self.data.name}"

    def needed_bytes(self) -> int:
        # The weights and AdamW's two moments; an atomic save holds the old file and the new one at once.
        weights = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        return 6 * weights + 2**20

    # ---- one batch --------------------------------------------------------------------------------------

    def start_epoch(self) -> None:
        self.model.train()

    def train_batch(self, batch: Any, seed: int) -> bool:
        c, p = self.config, self.progress
        self.adversary.generator = torch.Generator(device=self.ctx.device).manual_seed(seed)
        loss = self.adversary.loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training diverged: the loss is {loss.item()} at step {p.step} (epoch {p.epoch + 1}); lower lr or eps"
            )
        if c.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        p.step += 1
        size = len(batch["labels"])
        self.sums[0] += loss.item() * size
        self.sums[1] += size
        return True

    # ---- end of an epoch --------------------------------------------------------------------------------

    def epoch_record(self, seconds: float) -> dict[str, Any]:
        loss_sum, seen = dist_utils.all_reduce_sum(self.sums, self.ctx)
        self.sums = [0.0, 0.0]
        started = time.perf_counter()
        val_acc = self.validate()
        return {
            "epoch": self.progress.epoch + 1,
            "step": self.progress.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / seen,
            "val_clean_acc": val_acc,
            "epoch_seconds": seconds,
            "val_seconds": time.perf_counter() - started,
            "samples_per_second": seen / seconds if seconds > 0 else None,
        }

    def validate(self) -> float | None:
        """Clean accuracy on the first ``val_size`` validation examples, each rank taking every N-th one."""
        c, ctx = self.config, self.ctx
        n = min(c.val_size, len(self.data.val))
        if n == 0:
            return None
        mine = self.data.val.subset(torch.arange(n)[ctx.rank :: ctx.world_size])
        correct = 0.0
        if len(mine):
            loader = text_loader(mine, self.tokenizer, batch_size=64, max_length=c.max_length)
            result = clean_accuracy(
                self.model, loader, special_token_ids=self.tokenizer.all_special_ids, progress=False
            )
            correct = result.accuracy * result.count
        (correct,) = dist_utils.all_reduce_sum([correct], ctx)
        return round(correct) / n

    # ---- after training ---------------------------------------------------------------------------------

    def finish(self) -> None:
        """Say what went wrong, if anything did; write the report when the run reached its end."""
        p = self.progress
        self.warnings = diagnose(p.metrics, self.data.num_classes, advice=ADVICE)
        for warning in self.warnings:
            self.say(f"warning: {warning}")
        ended = p.stop is None or p.stop.reason is StopReason.COLLAPSED
        if self.config.report and ended and self.ctx.is_main:
            self.write_report()

    def write_report(self) -> dict[str, Path]:
        """The run folder's report on the test split (see :mod:`advfast.text.training.report`)."""
        from advfast.text.training.evaluation import evaluate_text_classifier, remove_progress
        from advfast.text.training.report import headline, write_text_report

        c, p = self.config, self.progress
        count = min(c.eval_limit or len(self.data.test), len(self.data.test))
        self.say(
            f"test report: embedding PGD-{c.eval_steps} x{c.eval_restarts} at eps "
            f"{', '.join(f'{e:g}' for e in c.eval_eps)}, token substitution of {', '.join(map(str, c.eval_budgets))} "
            f"token(s), on {count} test examples"
        )
        result = evaluate_text_classifier(
            self.model, self.tokenizer, self.data.test, class_names=self.data.classes, eps=c.eval_eps,
            budgets=c.eval_budgets, norm=c.eval_norm, steps=c.eval_steps, restarts=c.eval_restarts,
            candidates=c.eval_candidates, batch_size=c.batch_size, max_length=c.max_length, limit=c.eval_limit,
            seed=c.seed, progress=c.progress, checkpoint_dir=self.out,
        )  # fmt: skip
        extra = {
            "data": self.data.describe(),
            "config": c.to_dict(),
            "model_path": self.model_path,
            "stopped": None if p.stop is None else str(p.stop),
            "world_size": self.ctx.world_size,
            "warnings": self.warnings,
        }
        paths = write_text_report(result, self.out, title=run_title(c, self.data.name), extra=extra, metrics=p.metrics)
        remove_progress(self.out)
        self.say(headline(result))
        return paths

    # ---- checkpoints ------------------------------------------------------------------------------------

    def checkpoint_state(self) -> dict[str, Any]:
        """What resume needs, and what :func:`advfast.text.training.load_text_run` rebuilds the model from."""
        return {
            "model_name": self.config.model,
            "model_path": self.model_path,
            "num_labels": self.data.num_classes,
            "classes": list(self.data.classes),
            "data": self.data.describe(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def rank_state(self) -> dict[str, Any]:
        return {"sums": list(self.sums)}

    def required_keys(self) -> tuple[str, ...]:
        return ("model", "optimizer", "scheduler", "num_labels", "classes")

    def load_state(self, record: dict[str, Any], rank_state: dict[str, Any], path: Path) -> None:
        if record["num_labels"] != self.data.num_classes or list(record["classes"]) != list(self.data.classes):
            raise CheckpointError(
                f"{path}: trained on classes {record['classes']}, but the data now has {self.data.classes}"
            )
        check_finite_state(record["model"], path)
        try:
            self.model.load_state_dict(record["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: written for a different model: {str(exc).splitlines()[0]}") from None
        self.optimizer.load_state_dict(record["optimizer"])
        self.scheduler.load_state_dict(record["scheduler"])
        self.sums = list(rank_state.get("sums", [0.0, 0.0]))


def run_title(config: TextTrainConfig, data_name: str) -> str:
    method = config.method
    if config.eps is not None and math.isfinite(config.eps):
        method += f", eps {config.eps:g}"
    return f"{method} fine-tuning of {Path(config.model).name} on {data_name}"
