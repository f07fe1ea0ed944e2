"""``advfast train``: train an image classifier (adversarially), with checkpoints, a report and plots."""

from __future__ import annotations

import argparse

from advfast.cli.common import add_config_flags, add_resume_flag, chosen_fields, resume_folder

NAME = "train"
HELP = "train a classifier (adversarially), with checkpoints, a test report and plots"
EXAMPLES = """\
  advfast train --data mnist --method pgd --epochs 10 --out runs/mnist-pgd
  advfast train --data digits --method fgsm-rs --eps 0.1 --epochs 20 --out runs/digits-fast
  torchrun --nproc_per_node=2 -m advfast.cli train --data mnist --method trades --out runs/mnist-trades
  advfast train --resume runs/mnist-pgd --epochs 20      # continue that run (here: to 20 epochs)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from advfast.train import TrainConfig

    add_resume_flag(parser, "training")
    add_config_flags(parser, TrainConfig)


def run(args: argparse.Namespace) -> int:
    from advfast.train import TrainConfig, Trainer

    chosen = chosen_fields(args, TrainConfig)
    folder = resume_folder(args)
    if folder is not None:
        chosen.pop("out", None)
        trainer = Trainer.resume(folder, **chosen)
        if trainer.ctx.is_main:
            print(f"resuming {trainer.out} at epoch {trainer.progress.epoch + 1}, step {trainer.progress.step}")
    else:
        trainer = Trainer(TrainConfig(**chosen))
    trainer.fit()
    if trainer.ctx.is_main:
        stop = trainer.progress.stop
        if stop is not None and stop.reason.resumable:
            print(f"stopped: {stop} (resume with: advfast train --resume {trainer.out})")
        print(f"run folder: {trainer.out}")
    return 0
