"""``advfast augment``: train a generator, then measure it with a classifier trained on the real data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advfast.data import DataSplits
from advfast.gan import GeneratorTrainer, generator_quality
from advfast.train.config import TrainConfig
from advfast.train.evaluation import load_trained
from advfast.train.trainer import Trainer


def reference_classifier(data: DataSplits, folder: Path, *, epochs: int, seed: int, device: torch.device,
                         progress: bool) -> nn.Module:  # fmt: skip
    """A standard classifier of the real training split, trained once and kept in ``folder/last.pt``."""
    checkpoint = folder / "last.pt"
    if checkpoint.is_file():
        model, _, _ = load_trained(checkpoint, device)
        return model
    config = TrainConfig(
        data=data.name, method="standard", eps=0.0, epochs=epochs, seed=seed, out=str(folder), report=False,
        progress=progress, device=str(device),
    )  # fmt: skip
    trainer = Trainer(config, data=data)
    trainer.fit()
    return trainer.model.eval()


def measure_generator(trainer: GeneratorTrainer) -> dict[str, Any]:
    """Frechet distance and label accuracy of the trained generator under a real-data classifier (on the test
    split), written to ``quality.json`` in the run folder."""
    c = trainer.config
    classifier = reference_classifier(
        trainer.data, trainer.out / "classifier", epochs=c.classifier_epochs, seed=c.seed, device=trainer.device,
        progress=c.progress,
    )  # fmt: skip
    test = trainer.data.test
    with torch.no_grad():
        predicted = torch.cat(
            [classifier(test.x[s : s + 1000].to(trainer.device)).argmax(1).cpu() for s in range(0, len(test), 1000)]
        )
    quality = {
        "generator": c.generator,
        "data": trainer.data.name,
        "epochs": trainer.epoch,
        "classifier_test_accuracy": (predicted == test.y).float().mean().item(),
        **generator_quality(trainer.sampler, classifier, test.x, test.y, samples=c.quality_samples, seed=c.seed),
    }
    (trainer.out / "quality.json").write_text(json.dumps(quality, indent=2) + "\n")
    return quality


def run_augment(trainer: GeneratorTrainer) -> dict[str, Any] | None:
    """Train (or continue) the generator; when it finished, measure it. Returns the quality record, or None
    when the run stopped early (signal, max_steps)."""
    trainer.fit()
    if trainer.stopped is not None:
        return None
    return measure_generator(trainer)
