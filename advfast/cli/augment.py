"""``advfast augment``: train a class-conditional generator and measure its samples."""

from __future__ import annotations

import argparse

from advfast.cli.common import add_config_flags, add_resume_flag, chosen_fields, resume_folder

NAME = "augment"
HELP = "train a class-conditional generator (cgan, vae) and judge its samples"
EXAMPLES = """\
  advfast augment --data mnist --model cgan --epochs 30 --out runs/mnist-gan
  advfast augment --data fashion-mnist --model vae --epochs 20 --out runs/fashion-vae
  advfast augment --resume runs/mnist-gan --epochs 40
  advfast train --data mnist --subset 0.1 --augment runs/mnist-gan --synthetic-ratio 0.5 \\
                --synthetic-adversarial --method pgd --out runs/mnist-pgd-aug"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from advfast.gan import GeneratorConfig

    add_resume_flag(parser, "generator")
    add_config_flags(parser, GeneratorConfig)


def run(args: argparse.Namespace) -> int:
    from advfast.gan import GeneratorConfig, GeneratorTrainer
    from advfast.pipelines import run_augment

    chosen = chosen_fields(args, GeneratorConfig)
    folder = resume_folder(args)
    if folder is not None:
        chosen.pop("out", None)
        trainer = GeneratorTrainer.resume(folder, **chosen)
        print(f"resuming {trainer.out} at epoch {trainer.progress.epoch + 1}, step {trainer.progress.step}")
    else:
        trainer = GeneratorTrainer(GeneratorConfig(**chosen))
    quality = run_augment(trainer)
    if quality is None:
        print(f"stopped: {trainer.progress.stop} (resume with: advfast augment --resume {trainer.out})")
    else:
        per_class = quality["label_accuracy_per_class"]
        weakest = min(range(len(per_class)), key=per_class.__getitem__)
        print(
            f"label accuracy {quality['label_accuracy']:.1%} (weakest class {trainer.data.classes[weakest]}: "
            f"{per_class[weakest]:.1%}); Frechet distance {quality['frechet_distance']:.1f} (real-vs-real floor "
            f"{quality['frechet_distance_real_halves']:.1f}, n = {quality['frechet_samples']})"
        )
        for warning in quality["warnings"]:
            print(f"warning: {warning}")
    print(f"run folder: {trainer.out}")
    return 0
