"""``advfast llm-train``: fine-tune a chat model to hold against prompt attacks (sft or cat), with checkpoints,
a report and plots."""

from __future__ import annotations

import argparse

from advfast.cli.common import add_config_flags, add_resume_flag, chosen_fields, fit_run, resume_folder

NAME = "llm-train"
HELP = "fine-tune a chat model against prompt attacks (sft, cat), with checkpoints, a report and plots"
EXAMPLES = """\
  advfast llm-train --model smollm2 --task secret --method sft --out runs/smol-sft
  advfast llm-train --model smollm2 --task secret --method cat --eps 0.05 --out runs/smol-cat
  torchrun --nproc_per_node=2 -m advfast.cli llm-train --method cat --parallel fsdp --out runs/smol-cat-fsdp
  advfast llm-train --resume runs/smol-cat --epochs 5      # continue that run (here: to 5 epochs)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from advfast.llm.config import LLMTrainConfig

    add_resume_flag(parser, "training")
    add_config_flags(parser, LLMTrainConfig)


def run(args: argparse.Namespace) -> int:
    from advfast.llm import ContinuousAT, LLMTrainConfig

    fit_run(
        resume_folder(args), chosen_fields(args, LLMTrainConfig), resume=ContinuousAT.resume,
        start=lambda chosen: ContinuousAT(config=LLMTrainConfig(**chosen)), command="llm-train",
    )  # fmt: skip
    return 0
