"""A PNG of generated samples: one row per class."""

from __future__ import annotations

from pathlib import Path

import torch

from advfast.gan.sampler import GeneratorSampler
from advfast.runtime.files import atomic_write


def save_sample_grid(
    sampler: GeneratorSampler,
    path: str | Path,
    *,
    per_class: int = 10,
    seed: int = 0,
    class_names: list[str] | None = None,
    title: str | None = None,
) -> Path:
    """``per_class`` samples of every class, a row each, labelled with the class name."""
    from matplotlib.figure import Figure

    num_classes = sampler.num_classes
    generator = torch.Generator(device=sampler.device).manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    x, _ = sampler.sample(len(labels), labels, generator=generator)
    x = x.cpu().clamp(0, 1)
    channels = x.shape[1]
    figure = Figure(figsize=(per_class * 0.8 + 1.2, num_classes * 0.8 + (0.4 if title else 0)), layout="constrained")
    axes = figure.subplots(num_classes, per_class, squeeze=False)
    for c in range(num_classes):
        for j in range(per_class):
            ax = axes[c][j]
            image = x[c * per_class + j]
            if channels == 1:
                ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(image[:3].permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
        axes[c][0].set_ylabel(class_names[c] if class_names else str(c), rotation=0, ha="right", va="center")
    if title:
        figure.suptitle(title)
    return atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=100))
