"""A trained generator, as something that samples labelled images: ``x, y = gen.sample(n, labels)``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from advfast.gan.networks import ConditionalGenerator, ConditionalVAE
from advfast.runtime.checkpoint import CheckpointError, check_finite_state, load_checkpoint

KINDS = ("cgan", "vae")


class GeneratorSampler:
    """Draws class-conditional samples from a trained cGAN generator or VAE decoder (in eval mode, without
    gradients). ``input_shape`` and ``num_classes`` say what data it was trained on."""

    def __init__(self, kind: str, network: ConditionalGenerator, device: torch.device | str = "cpu") -> None:
        if kind not in KINDS:
            raise ValueError(f"generator kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.network = network.to(device).eval()
        self.device = torch.device(device)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.network.input_shape

    @property
    def num_classes(self) -> int:
        return self.network.num_classes

    @torch.no_grad()
    def sample(
        self, n: int, labels: Tensor | int | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``n`` images ``[n, C, H, W]`` in [0, 1] and their labels ``[n]``. ``labels``: a [n] tensor, one class
        for all, or None for classes in turn (0, 1, ..., C-1, 0, ...: balanced)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        if labels is None:
            y = torch.arange(n, device=self.device) % self.num_classes
        elif isinstance(labels, int):
            y = torch.full((n,), labels, dtype=torch.long, device=self.device)
        else:
            y = torch.as_tensor(labels, device=self.device).long()
            if y.shape != (n,):
                raise ValueError(f"labels must have shape [{n}], got {tuple(y.shape)}")
        if n and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(f"labels must be in [0, {self.num_classes}), got {y.min().item()}..{y.max().item()}")
        z = torch.randn(n, self.network.latent_dim, device=self.device, generator=generator)
        return self.network(z, y).float(), y


def build_network(kind: str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The network trained for ``kind``: the cGAN's generator (its discriminator is built by the trainer) or
    the whole VAE."""
    if kind == "cgan":
        return ConditionalGenerator(input_shape, num_classes)
    if kind == "vae":
        return ConditionalVAE(input_shape, num_classes)
    raise ValueError(f"generator must be one of {KINDS}, got {kind!r}")


def load(path: str | Path, device: torch.device | str = "cpu") -> GeneratorSampler:
    """The sampler saved by ``advfast augment`` in the run folder ``path`` (or the generator checkpoint file)."""
    path = Path(path)
    path = path / "generator.pt" if path.is_dir() else path
    record = load_checkpoint(
        path, map_location=device, role="generator", required=("kind", "input_shape", "num_classes", "network")
    )
    kind, shape, num_classes = record["kind"], tuple(record["input_shape"]), record["num_classes"]
    check_finite_state(record["network"], path)
    network = build_network(kind, shape, num_classes)
    try:
        network.load_state_dict(record["network"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: its {kind} weights do not fit: {str(exc).splitlines()[0]}") from None
    sampler_network = network.decoder if kind == "vae" else network
    return GeneratorSampler(kind, sampler_network, device)


def check_compatible(sampler: GeneratorSampler, input_shape: tuple[int, ...], num_classes: int, path: str) -> None:
    """A generator may only feed data of its own image shape and class count."""
    if tuple(sampler.input_shape) != tuple(input_shape) or sampler.num_classes != num_classes:
        raise ValueError(
            f"the generator {path} makes {sampler.num_classes}-class images of shape {sampler.input_shape}, but "
            f"the data has {num_classes} classes of shape {tuple(input_shape)}"
        )
