"""Training a class-conditional generator (cGAN or VAE) on a data set, on the shared run loop: checkpoints,
exact resume, progress and sample grids."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advfast.checks import check_count, check_real
from advfast.data import DataSplits, load_dataset
from advfast.gan.grid import save_sample_grid
from advfast.gan.losses import discriminator_loss, generator_loss, mode_seeking_term, vae_loss
from advfast.gan.networks import ProjectionDiscriminator
from advfast.gan.sampler import KINDS, GeneratorSampler, build_network
from advfast.runtime import distributed as dist_utils
from advfast.runtime.checkpoint import CheckpointError, check_finite_state
from advfast.runtime.config import RunConfig, option
from advfast.runtime.loop import RunLoop

GENERATOR_FILE = "generator.pt"


@dataclass
class GeneratorConfig(RunConfig):
    """A generator run. ``lr`` defaults to 2e-4 with Adam betas (0.5, 0.999) for the cGAN (Radford et al.)
    and 1e-3 for the VAE; ``label_smoothing`` s makes the discriminator's real target 1 - s; ``diversity`` weighs
    the cGAN's mode-seeking term (Mao et al.) against conditional mode collapse: on digits, 0 gave one image per
    class, 0.02 a within-class spread like the data's at better Frechet distance, 0.1 and up diverse samples of
    the wrong class."""

    job = "generator"

    data: str = option("mnist", "digits, mnist, fashion-mnist, a .npz file or a folder of class sub-folders",
                       group="data")  # fmt: skip
    subset: float = option(1.0, "keep this fraction of the training split (stratified)", group="data")
    model: str = option("cgan", "cgan (conditional DCGAN) or vae (conditional VAE)", choices=KINDS, group="data")
    epochs: int = option(30, "training epochs", group="training")
    lr: float | None = option(None, "Adam's learning rate", group="training", auto="2e-4 for cgan, 1e-3 for vae")
    label_smoothing: float = option(0.0, "cgan: one-sided label smoothing (real target 1 - s)", group="training")
    diversity: float = option(
        0.02, "cgan: weight of the mode-seeking term against one image per class (0: the plain loss)", group="training"
    )
    sample_every: int = option(5, "epochs between sample grids (0: only at the end)", group="evaluation")
    quality_samples: int = option(10000, "generated samples for the Frechet distance and label accuracy",
                                  group="evaluation")  # fmt: skip
    classifier_epochs: int = option(3, "epochs of the real-data classifier that judges the samples",
                                    group="evaluation")  # fmt: skip
    out: str = option("runs/generator", "run folder: every file the job writes goes here, and nowhere else")

    def validate(self) -> None:
        super().validate()
        if self.model not in KINDS:
            raise ValueError(f"model must be one of {list(KINDS)}, got {self.model!r}")
        check_real("subset", self.subset, low=0.0, high=1.0, low_open=True)
        for name in ("quality_samples", "classifier_epochs"):
            check_count(name, getattr(self, name))
        check_count("sample_every", self.sample_every, minimum=0)
        check_real("label_smoothing", self.label_smoothing, low=0.0, high=0.5, high_open=True)
        check_real("diversity", self.diversity, low=0.0)
        if self.lr is not None:
            check_real("lr", self.lr, low=0.0, low_open=True)

    @property
    def resolved_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 2e-4 if self.model == "cgan" else 1e-3


class GeneratorTrainer(RunLoop):
    """Trains ``config.model`` (cgan or vae) on ``config.data``'s training split (one process)."""

    role = "generator"
    config_class = GeneratorConfig
    checkpoint_file = GENERATOR_FILE
    config_file = "generator_config.json"
    metrics_file = "generator_metrics.jsonl"

    def __init__(self, config: GeneratorConfig, *, data: DataSplits | None = None) -> None:
        ctx = dist_utils.DistContext(device=dist_utils.resolve_device(config.device))
        super().__init__(config, ctx)
        self.device = ctx.device
        self.data = data if data is not None else load_dataset(config.data, subset=config.subset, seed=config.seed)
        if len(self.data.train) < config.batch_size:
            raise ValueError(
                f"the training split has {len(self.data.train)} samples, fewer than one batch of {config.batch_size}"
            )
        if config.model == "cgan" and config.batch_size < 2:
            # each step pairs two halves of the batch for the mode-seeking term: one sample leaves an empty pair
            raise ValueError(f"batch_size must be at least 2 for the cgan, got {config.batch_size}")
        torch.manual_seed(config.seed)
        shape, num_classes = self.data.input_shape, self.data.num_classes
        self.network = build_network(config.model, shape, num_classes).to(self.device)
        lr = config.resolved_lr
        if config.model == "cgan":
            self.discriminator: nn.Module | None = ProjectionDiscriminator(shape, num_classes).to(self.device)
            self.optimizers = [
                torch.optim.Adam(self.network.parameters(), lr=lr, betas=(0.5, 0.999)),
                torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999)),
            ]
        else:
            self.discriminator = None
            self.optimizers = [torch.optim.Adam(self.network.parameters(), lr=lr)]
        self.loader = dist_utils.make_loader(
            self.data.train, config.batch_size, ctx, shuffle=True, seed=config.seed, drop_last=True
        )
        self.sums: dict[str, float] = {}

    config: GeneratorConfig

    @property
    def sampler(self) -> GeneratorSampler:
        network = self.network.decoder if self.config.model == "vae" else self.network
        return GeneratorSampler(self.config.model, network, self.device)

    def description(self) -> str:
        return f"{self.config.model} {self.data.name}"

    def needed_bytes(self) -> int:
        modules = [self.network] + ([self.discriminator] if self.discriminator is not None else [])
        weights = sum(t.numel() * t.element_size() for m in modules for t in m.state_dict().values())
        return 6 * weights + 2**20  # weights and Adam's two moments, old and new file during a save

    # ---- one batch --------------------------------------------------------------------------------------

    def train_batch(self, batch: Any, seed: int) -> bool:
        x, y = batch[0].to(self.device), batch[1].to(self.device)
        self.network.train()
        values = self._vae_step(x, y) if self.discriminator is None else self._gan_step(x, y)
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value * len(x)
        self.sums["seen"] = self.sums.get("seen", 0.0) + len(x)
        self.progress.step += 1
        return True

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
                    f"{self.config.model} training diverged at step {self.progress.step}: loss {loss.item()} (lower lr)"
                )

    # ---- epochs -----------------------------------------------------------------------------------------

    def epoch_record(self, seconds: float) -> dict[str, Any]:
        seen = self.sums.pop("seen")
        record: dict[str, Any] = {"epoch": self.progress.epoch + 1, "step": self.progress.step}
        record.update({k: v / seen for k, v in self.sums.items()})
        record["epoch_seconds"] = seconds
        self.sums = {}
        return record

    def after_epoch(self, record: dict[str, Any]) -> None:
        every, epoch = self.config.sample_every, self.progress.epoch
        if every and epoch % every == 0 and epoch < self.config.epochs:
            save_sample_grid(self.sampler, self.out / f"samples_epoch{epoch:03d}.png",
                             class_names=self.data.classes, title=f"epoch {epoch}")  # fmt: skip

    def finish(self) -> None:
        if self.progress.stop is None:
            save_sample_grid(self.sampler, self.out / "samples.png", class_names=self.data.classes,
                             title=f"{self.config.model} on {self.data.name}, epoch {self.progress.epoch}")  # fmt: skip

    # ---- checkpoints ------------------------------------------------------------------------------------

    def checkpoint_state(self) -> dict[str, Any]:
        """What ``advfast.gan.load`` reads, and what resume needs."""
        return {
            "kind": self.config.model,
            "input_shape": list(self.data.input_shape),
            "num_classes": self.data.num_classes,
            "classes": self.data.classes,
            "network": self.network.state_dict(),
            "discriminator": self.discriminator.state_dict() if self.discriminator is not None else None,
            "optimizers": [opt.state_dict() for opt in self.optimizers],
        }

    def rank_state(self) -> dict[str, Any]:
        return {"sums": dict(self.sums)}

    def required_keys(self) -> tuple[str, ...]:
        return ("kind", "network", "discriminator", "optimizers")

    def load_state(self, record: dict[str, Any], rank_state: dict[str, Any], path: Path) -> None:
        if record["kind"] != self.config.model:
            raise CheckpointError(f"{path}: a {record['kind']} checkpoint, not a {self.config.model} one")
        check_finite_state(record["network"], path)
        try:
            self.network.load_state_dict(record["network"])
            if self.discriminator is not None:
                self.discriminator.load_state_dict(record["discriminator"])
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: written for another image shape or class count: {exc}") from None
        for optimizer, state in zip(self.optimizers, record["optimizers"], strict=True):
            optimizer.load_state_dict(state)
        self.sums = dict(rank_state.get("sums", {}))
