"""Mixing generated samples into training: a Dataset wrapper for your own loop, and the batch-level mixer the
trainer uses (optionally making the synthetic samples adversarial against the current classifier)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from advfast.attacks import pgd
from advfast.gan.sampler import GeneratorSampler, check_compatible


def check_ratio(ratio: float) -> float:
    """The share of synthetic samples in a batch: in [0, 1) (some real data always remains)."""
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0.0 <= ratio < 1.0:
        raise ValueError(f"synthetic ratio must be in [0, 1), got {ratio!r}")
    return float(ratio)


def synthetic_count(real: int, ratio: float) -> int:
    """How many synthetic samples join ``real`` real ones so that they are ``ratio`` of the whole:
    ``round(real * ratio / (1 - ratio))``."""
    return round(real * ratio / (1.0 - ratio))


class SyntheticMix(Dataset):
    """A real data set followed by generated samples making up ``ratio`` of the total; shuffle it as usual.

    Item i < len(real) is real; later items are generated (classes in turn) from a seed derived from
    ``seed`` and the indices of the batch, so an epoch's order fixes its samples. With a DataLoader, batches
    come through ``__getitems__``: one generator call per batch. Items are ``(x, y)`` like the real data's.
    """

    def __init__(self, real: Dataset, sampler: GeneratorSampler, ratio: float, *, seed: int = 0) -> None:
        self.real, self.sampler, self.ratio, self.seed = real, sampler, check_ratio(ratio), seed
        self.synthetic = synthetic_count(len(real), self.ratio)  # type: ignore[arg-type]
        first_x, _ = real[0]
        check_compatible(sampler, tuple(torch.as_tensor(first_x).shape), sampler.num_classes, "given")

    def __len__(self) -> int:
        return len(self.real) + self.synthetic  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        x, y = self.__getitems__([index])
        return x[0], y[0]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        n_real = len(self.real)  # type: ignore[arg-type]
        xs: list[Tensor] = []
        ys: list[Tensor] = []
        fake = [i - n_real for i in indices if i >= n_real]
        if fake:
            generator = torch.Generator(device=self.sampler.device).manual_seed(hash((self.seed, *fake)) % 2**62)
            labels = torch.tensor(fake) % self.sampler.num_classes
            x_fake, y_fake = self.sampler.sample(len(fake), labels, generator=generator)
            fake_iter = iter(zip(x_fake.cpu(), y_fake.cpu(), strict=True))
        for i in indices:
            if i >= n_real:
                x, y = next(fake_iter)
            else:
                x, y = self.real[i]
            xs.append(torch.as_tensor(x))
            ys.append(torch.as_tensor(y))
        return torch.stack(xs), torch.stack(ys).long()


class BatchAugmenter:
    """What the trainer calls per batch: ``synthetic_count(len(x), ratio)`` generated samples (classes in turn
    from a random offset), made adversarial within ``eps`` by PGD against the current model when asked, then
    appended to the real batch."""

    def __init__(
        self, sampler: GeneratorSampler, ratio: float, *, adversarial: bool = False, eps: float = 0.0,
        steps: int = 10, norm: str = "linf",
    ) -> None:  # fmt: skip
        self.sampler, self.ratio = sampler, check_ratio(ratio)
        self.adversarial, self.eps, self.steps, self.norm = adversarial, eps, steps, norm

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        n = synthetic_count(len(x), self.ratio)
        if n == 0:
            return x, y
        offset = int(torch.randint(self.sampler.num_classes, (1,), generator=generator, device=generator.device))
        labels = (torch.arange(n, device=x.device) + offset) % self.sampler.num_classes
        x_syn, y_syn = self.sampler.sample(n, labels, generator=generator)
        x_syn, y_syn = x_syn.to(x.device, x.dtype), y_syn.to(y.device)
        if self.adversarial and self.eps > 0:
            x_syn = pgd(model, x_syn, y_syn, eps=self.eps, steps=self.steps, norm=self.norm, generator=generator,
                        model_mode="as_is")  # fmt: skip
        return torch.cat([x, x_syn]), torch.cat([y, y_syn])
