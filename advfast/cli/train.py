"""``advfast train``: train an image classifier (adversarially), or fine-tune a transformer classifier on a
text data set, with checkpoints, a report and plots. One command: ``--data`` decides which trainer runs (a
text data set or a .csv / .jsonl file: the text trainer), and ``--resume`` follows the checkpoint's role."""

from __future__ import annotations

import argparse
from pathlib import Path

from advfast.cli.common import (
    CommandError,
    add_merged_config_flags,
    add_resume_flag,
    chosen_fields,
    fit_run,
    resume_folder,
)

NAME = "train"
HELP = (
    "train a classifier (adversarially) on images, or fine-tune a transformer classifier on text, with "
    "checkpoints, a test report and plots"
)
EXAMPLES = """\
  advfast train --data mnist --method pgd --epochs 10 --out runs/mnist-pgd
  advfast train --data digits --method fgsm-rs --eps 0.1 --epochs 20 --out runs/digits-fast
  torchrun --nproc_per_node=2 -m advfast.cli train --data mnist --method trades --out runs/mnist-trades
  advfast train --resume runs/mnist-pgd --epochs 20      # continue that run (here: to 20 epochs)
  advfast train --data rotten-tomatoes --model minilm --method freelb --epochs 2 --out runs/rt-freelb
  advfast train --data reviews.csv --model path/to/hf-model --method pgd --steps 2 --out runs/mine"""

KINDS = ("images", "text")


def config_classes() -> dict[str, type]:
    from advfast.text.training import TextTrainConfig
    from advfast.train import TrainConfig

    return {"images": TrainConfig, "text": TextTrainConfig}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_resume_flag(parser, "training")
    add_merged_config_flags(parser, config_classes())


def run_kind(args: argparse.Namespace, folder: Path | None) -> str:
    """``text`` when the run resumed is a text run, or ``--data`` names text data; else ``images``."""
    if folder is not None:
        from advfast.runtime.loop import checkpoint_path
        from advfast.text.training.saved import checkpoint_role
        from advfast.text.training.trainer import CHECKPOINT, ROLE

        return "text" if checkpoint_role(checkpoint_path(folder, CHECKPOINT)) == ROLE else "images"
    from advfast.data.text import is_text_data

    return "text" if args.data is not None and is_text_data(args.data) else "images"


def check_flags(args: argparse.Namespace, kind: str, classes: dict[str, type]) -> None:
    """Flags of the other kind only, and methods of the other kind, are errors that say which kind they are for."""
    from dataclasses import fields

    own = {f.name for f in fields(classes[kind])}
    other = "text" if kind == "images" else "images"
    foreign = [
        f"--{f.name.replace('_', '-')}"
        for f in fields(classes[other])
        if f.name not in own and getattr(args, f.name, None) is not None
    ]
    data = "text data" if kind == "text" else "image data"
    if foreign:
        verb = "applies" if len(foreign) == 1 else "apply"
        raise CommandError(f"{', '.join(foreign)} {verb} to {other} only, and this run trains on {data}")
    method = getattr(args, "method", None)
    if method is not None:
        own_methods = _methods(kind)
        if method not in own_methods:
            raise CommandError(
                f"--method {method} is a method for {other}; on {data} choose one of {', '.join(own_methods)}"
            )


def _methods(kind: str) -> tuple[str, ...]:
    if kind == "text":
        from advfast.text.training import METHODS

        return METHODS
    from advfast.train.objectives import OBJECTIVES

    return tuple(OBJECTIVES)


def run(args: argparse.Namespace) -> int:
    classes = config_classes()
    folder = resume_folder(args)
    kind = run_kind(args, folder)
    check_flags(args, kind, classes)
    if kind == "text":
        from advfast.text.training import TextTrainer as trainer_class
    else:
        from advfast.train import Trainer as trainer_class
    config_class = classes[kind]
    fit_run(
        folder, chosen_fields(args, config_class), resume=trainer_class.resume,
        start=lambda chosen: trainer_class(config_class(**chosen)), command="train",
    )  # fmt: skip
    return 0
