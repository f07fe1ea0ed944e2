"""``advfast augment``: train a generator, then judge its samples with a classifier trained on the real data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advfast.data import DataSplits
from advfast.eval import predict
from advfast.gan import GeneratorTrainer, generator_quality
from advfast.runtime.files import atomic_write_text
from advfast.train import TrainConfig, Trainer, load_classifier

JUDGE_FOLDER = "classifier"
QUALITY_FILE = "quality.json"
# A generator whose samples the judge labels correctly this little more often than chance makes images that
# do not look like their class (uniform grey, noise): worth a warning with what to change.
NEAR_CHANCE_MARGIN = 0.15


def judge_classifier(
    data: DataSplits, folder: Path, *, epochs: int, seed: int, device: torch.device, progress: bool
) -> nn.Module:
    """A standard classifier of the real training split, trained once and kept in ``folder`` (a run folder of
    its own inside the generator's)."""
    if (folder / Trainer.checkpoint_file).is_file():
        return load_classifier(folder, device).model
    config = TrainConfig(
        data=data.name, method="standard", eps=0.0, epochs=epochs, seed=seed, out=str(folder), report=False,
        progress=progress, device=str(device),
    )  # fmt: skip
    trainer = Trainer(config, data=data)
    trainer.fit()
    return trainer.model.eval()


def measure_generator(trainer: GeneratorTrainer) -> dict[str, Any]:
    """Frechet distance and label accuracy of the trained generator under a real-data classifier (on the test
    split), written to ``quality.json`` in the run folder, with warnings when the samples are near chance."""
    c = trainer.config
    judge = judge_classifier(
        trainer.data, trainer.out / JUDGE_FOLDER, epochs=c.classifier_epochs, seed=c.seed, device=trainer.device,
        progress=c.progress,
    )  # fmt: skip
    test = trainer.data.test
    quality: dict[str, Any] = {
        "generator": c.model,
        "data": trainer.data.name,
        "epochs": trainer.progress.epoch,
        "classifier_test_accuracy": (predict(judge, test.x) == test.y).double().mean().item(),
        **generator_quality(trainer.sampler, judge, test.x, test.y, samples=c.quality_samples, seed=c.seed),
    }
    quality["warnings"] = quality_warnings(quality, trainer.data.num_classes)
    atomic_write_text(trainer.out / QUALITY_FILE, json.dumps(quality, indent=2) + "\n")
    return quality


def quality_warnings(quality: dict[str, Any], num_classes: int) -> list[str]:
    """What to change when the judge cannot tell the generated classes apart (label accuracy near 1/C)."""
    chance = 1.0 / num_classes
    accuracy = quality["label_accuracy"]
    if accuracy > chance + NEAR_CHANCE_MARGIN:
        return []
    return [
        f"the judge labels only {accuracy:.1%} of the generated samples as their class, near chance "
        f"({chance:.1%}): the generator has not learned the classes yet (look at samples.png). Train for more "
        f"epochs (--epochs; {quality['epochs']} so far, continue with --resume), or try the other model "
        "(--model vae trains faster on small data); a cgan whose discriminator wins early also needs a lower lr"
    ]


def run_augment(trainer: GeneratorTrainer) -> dict[str, Any] | None:
    """Train (or continue) the generator; when it finished, measure it. Returns the quality record, or None
    when the run stopped early (signal, max_steps)."""
    trainer.fit()
    if trainer.progress.stop is not None:
        return None
    with trainer.folder:  # the folder is ours again while the judge and quality.json are written
        return measure_generator(trainer)
