"""Training a class-conditional generator (cGAN or VAE) on a data set, with checkpoints, exact resume,
progress and sample grids."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from advfast.data import DataSplits, load_dataset
from advfast.gan.grid import save_sample_grid
from advfast.gan.losses import discriminator_loss, generator_loss, mode_seeking_term, vae_loss
from advfast.gan.networks import ProjectionDiscriminator
from advfast.gan.sampler import KINDS, GeneratorSampler, build_network
from advfast.runtime import distributed as dist_utils
from advfast.runtime.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from advfast.runtime.signals import stop_on_signals

GENERATOR_FILE = "generator.pt"


@dataclass
class GeneratorConfig:
    """A generator run. ``lr`` defaults to 2e-4 with Adam betas (0.5, 0.999) for the cGAN (Radford et al.)
    and 1e-3 for the VAE; ``label_smoothing`` s makes the discriminator's real target 1 - s; ``diversity`` weighs
    the cGAN's mode-seeking term (Mao et al.) against conditional mode collapse: on digits, 0 gave one image per
    class, 0.02 a within-class spread like the data's at better Frechet distance, 0.1 and up diverse samples of
    the wrong class."""

    data: str = "mnist"
    subset: float = 1.0
    generator: str = "cgan"
    epochs: int = 30
    batch_size: int = 128
    lr: float = math.nan
    label_smoothing: float = 0.0
    diversity: float = 0.02  # cgan: weight of the mode-seeking term (0: the plain non-saturating loss)
    seed: int = 0
    sample_every: int = 5  # epochs between sample grids (0: only at the end)
    checkpoint_every: int = 0  # steps between checkpoints (0: each epoch)
    max_steps: int = 0
    quality_samples: int = 10000  # generated samples for the quality measures (advfast augment)
    classifier_epochs: int = 3  # the real-data classifier that measures quality (advfast augment)
    out: str = "runs/generator"
    device: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        need(self.generator in KINDS, f"generator must be one of {KINDS}, got {self.generator!r}")
        for name in ("epochs", "batch_size", "quality_samples", "classifier_epochs"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        for name in ("sample_every", "checkpoint_every", "max_steps", "seed"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 0, f"{name} must be an integer >= 0, got {value!r}")
        need(0.0 <= self.label_smoothing < 0.5, f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        need(math.isfinite(self.diversity) and self.diversity >= 0, f"diversity must be >= 0, got {self.diversity}")
        need(math.isnan(self.lr) or self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(0.0 < self.subset <= 1.0, f"subset must be in (0, 1], got {self.subset}")

    @property
    def resolved_lr(self) -> float:
        if not math.isnan(self.lr):
            return self.lr
        return 2e-4 if self.generator == "cgan" else 1e-3

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["lr"] = None if math.isnan(self.lr) else self.lr
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> GeneratorConfig:
        known = {f.name for f in fields(cls)}
        record = {k: v for k, v in record.items() if k in known}
        if record.get("lr") is None:
            record["lr"] = math.nan
        return cls(**record)


class GeneratorTrainer:
    """Trains ``config.generator`` on ``config.data``'s training split (one process)."""

    def __init__(self, config: GeneratorConfig, *, data: DataSplits | None = None) -> None:
        self.config = config
        self.device = dist_utils.setup(config.device).device
        self.data = data if data is not None else load_dataset(config.data, subset=config.subset, seed=config.seed)
        if len(self.data.train) < config.batch_size:
            raise ValueError(
                f"the training split has {len(self.data.train)} samples, fewer than one batch of {config.batch_size}"
            )
        torch.manual_seed(config.seed)
        shape, classes = self.data.input_shape, self.data.num_classes
        self.network = build_network(config.generator, shape, classes).to(self.device)
        lr = config.resolved_lr
        if config.generator == "cgan":
            self.discriminator: nn.Module | None = ProjectionDiscriminator(shape, classes).to(self.device)
            self.optimizers = [
                torch.optim.Adam(self.network.parameters(), lr=lr, betas=(0.5, 0.999)),
                torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999)),
            ]
        else:
            self.discriminator = None
            self.optimizers = [torch.optim.Adam(self.network.parameters(), lr=lr)]
        ctx = dist_utils.DistContext(device=self.device)
        if config.generator == "cgan" and config.batch_size // ctx.world_size < 2:
            # each step pairs two halves of the batch for the mode-seeking term: one sample leaves an empty pair
            raise ValueError(
                f"batch_size must give each of the {ctx.world_size} process(es) at least 2 samples for the cgan, "
                f"got {config.batch_size}"
            )
        self.loader = dist_utils.make_loader(
            self.data.train, config.batch_size, ctx, shuffle=True, seed=config.seed, drop_last=True
        )
        self.out = Path(config.out)
        self.epoch = self.batch = self.step = 0
        self.metrics: list[dict[str, Any]] = []
        self.stopped: str | None = None
        self._sums: dict[str, float] = {}

    @property
    def sampler(self) -> GeneratorSampler:
        network = self.network.decoder if self.config.generator == "vae" else self.network
        return GeneratorSampler(self.config.generator, network, self.device)

    # ---- the loop --------------------------------------------------------------------------------------

    def fit(self) -> list[dict[str, Any]]:
        c = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "generator_config.json").write_text(json.dumps(c.to_dict(), indent=2) + "\n")
        (self.out / "generator_metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in self.metrics))
        batches = len(self.loader)
        bar = tqdm(
            total=c.epochs * batches, initial=self.epoch * batches + self.batch, unit="batch",
            desc=f"{c.generator} {self.data.name}", disable=not c.progress, dynamic_ncols=True,
        )  # fmt: skip
        with stop_on_signals() as stop, bar:
            while self.epoch < c.epochs and self.stopped is None:
                self.loader.sampler.set_epoch(self.epoch, start=self.batch * self.loader.batch_size)
                started = time.perf_counter()
                for x, y in self.loader:
                    self._train_step(x.to(self.device), y.to(self.device))
                    self.batch += 1
                    self.step += 1
                    bar.update(1)
                    if c.checkpoint_every and self.step % c.checkpoint_every == 0:
                        self.save()
                    if stop or (c.max_steps and self.step >= c.max_steps):
                        self.stopped = f"signal {stop.signal}" if stop else f"max_steps {c.max_steps}"
                        break
                if self.stopped is None:
                    self._end_epoch(time.perf_counter() - started)
                    bar.set_postfix({k: f"{v:.3f}" for k, v in self.metrics[-1].items() if "loss" in k})
        self.save()
        if self.stopped is None:
            save_sample_grid(self.sampler, self.out / "samples.png", class_names=self.data.classes,
                             title=f"{c.generator} on {self.data.name}, epoch {self.epoch}")  # fmt: skip
        return self.metrics

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        seed = ((self.config.seed * 1_000_003 + self.epoch) * 1_000_037 + self.batch) % 2**62
        torch.manual_seed(seed)
        self.network.train()
        values = self._vae_step(x, y) if self.discriminator is None else self._gan_step(x, y)
        for key, value in values.items():
            self._sums[key] = self._sums.get(key, 0.0) + value * len(x)
        self._sums["seen"] = self._sums.get("seen", 0.0) + len(x)

    def _gan_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """One discriminator step, then one generator step. The generated batch is two halves with the same
        labels (those of the real batch's first half) and independent z, for the mode-seeking term."""
        generator_opt, discriminator_opt = self.optimizers
        assert self.discriminator is not None
        half = len(x) // 2
        y_fake = torch.cat([y[:half], y[:half]])
        z = torch.randn(2 * half, self.network.latent_dim, device=self.device)
        fake = self.network(z, y_fake)
        real_logits = self.discriminator(x, y)
        fake_logits = self.discriminator(fake.detach(), y_fake)
        d_loss = discriminator_loss(real_logits, fake_logits, real_target=1.0 - self.config.label_smoothing)
        discriminator_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        discriminator_opt.step()
        adversarial = generator_loss(self.discriminator(fake, y_fake))
        diversity = mode_seeking_term(fake[:half], fake[half:], z[:half], z[half:])
        g_loss = adversarial + self.config.diversity * diversity
        generator_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        generator_opt.step()
        self._check_finite(d_loss, g_loss)
        return {
            "d_loss": d_loss.item(),
            "g_loss": adversarial.item(),
            "mode_seeking": diversity.item(),
            "d_real": torch.sigmoid(real_logits).mean().item(),
            "d_fake": torch.sigmoid(fake_logits).mean().item(),
        }

    def _vae_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        (optimizer,) = self.optimizers
        reconstruction, mu, log_var = self.network(x, y)
        loss, recon, kl = vae_loss(reconstruction, x, mu, log_var)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        self._check_finite(loss)
        return {"loss": loss.item(), "reconstruction": recon.item(), "kl": kl.item()}

    def _check_finite(self, *losses: torch.Tensor) -> None:
        for loss in losses:
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{self.config.generator} training diverged at step {self.step}: loss {loss.item()} (lower lr)"
                )

    def _end_epoch(self, seconds: float) -> None:
        seen = self._sums.pop("seen")
        record = {"epoch": self.epoch + 1, "step": self.step}
        record.update({k: v / seen for k, v in self._sums.items()})
        record["epoch_seconds"] = seconds
        self.metrics.append(record)
        self._sums = {}
        self.epoch += 1
        self.batch = 0
        with (self.out / "generator_metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        every = self.config.sample_every
        if every and self.epoch % every == 0 and self.epoch < self.config.epochs:
            save_sample_grid(self.sampler, self.out / f"samples_epoch{self.epoch:03d}.png",
                             class_names=self.data.classes, title=f"epoch {self.epoch}")  # fmt: skip
        self.save()

    # ---- checkpoints -----------------------------------------------------------------------------------

    def save(self) -> None:
        """The generator checkpoint (atomic): what ``advfast.gan.load`` reads, and what resume needs."""
        save_checkpoint(
            self.out / GENERATOR_FILE,
            {
                "role": "generator",
                "kind": self.config.generator,
                "image_shape": list(self.data.input_shape),
                "num_classes": self.data.num_classes,
                "classes": self.data.classes,
                "config": self.config.to_dict(),
                "network": self.network.state_dict(),
                "discriminator": self.discriminator.state_dict() if self.discriminator is not None else None,
                "optimizers": [opt.state_dict() for opt in self.optimizers],
                "progress": {"epoch": self.epoch, "batch": self.batch, "step": self.step, "stopped": self.stopped},
                "sums": dict(self._sums),
                "metrics": self.metrics,
            },
        )

    def load(self, path: str | Path) -> None:
        record = load_checkpoint(path, map_location=self.device)
        if record.get("role") != "generator" or record["kind"] != self.config.generator:
            raise CheckpointError(f"{path}: not a {self.config.generator} generator checkpoint")
        try:
            self.network.load_state_dict(record["network"])
            if self.discriminator is not None:
                self.discriminator.load_state_dict(record["discriminator"])
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: written for another image shape or class count: {exc}") from None
        for optimizer, state in zip(self.optimizers, record["optimizers"], strict=True):
            optimizer.load_state_dict(state)
        progress = record["progress"]
        self.epoch, self.batch, self.step = progress["epoch"], progress["batch"], progress["step"]
        self.metrics, self._sums, self.stopped = list(record["metrics"]), dict(record["sums"]), None

    @classmethod
    def resume(cls, path: str | Path, **overrides: Any) -> GeneratorTrainer:
        record = load_checkpoint(path)
        if record.get("role") != "generator":
            raise CheckpointError(f"{path}: not a generator checkpoint")
        trainer = cls(GeneratorConfig.from_dict({**record["config"], **overrides}))
        trainer.load(path)
        return trainer
