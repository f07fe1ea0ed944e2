"""What every subcommand shares: flags generated from a config's field metadata (the one source of their help),
typed argument parsers with clear messages, and the run-folder conventions."""

from __future__ import annotations

import argparse
import math
import types
import typing
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

from advfast.runtime.config import AUTO, RunConfig
from advfast.runtime.loop import StopReason

GROUP_TITLES = {
    "data": "data and model",
    "method": "method and threat model",
    "training": "optimisation",
    "augmentation": "generated data",
    "evaluation": "validation and report",
    "run": "run folder, seeding, checkpoints",
}


class CommandError(ValueError):
    """A command line that cannot be carried out; printed as ``advfast CMD: error: ...``."""


# ---- typed values -----------------------------------------------------------------------------------------


def integer(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def real(*, minimum: float = -math.inf, positive: bool = False) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
        if (positive and value <= 0) or value < minimum:
            raise argparse.ArgumentTypeError(f"must be {'> 0' if positive else f'>= {minimum:g}'}, got {value:g}")
        return value

    return parse


def maybe_auto(parse: Any) -> Any:
    """A parser that also takes ``auto`` (None: the config decides)."""

    def parse_or_auto(text: str) -> Any:
        return None if text == AUTO else parse(text)

    return parse_or_auto


def plain_text(text: str) -> str:
    return text


# ---- flags from a config's fields ---------------------------------------------------------------------------


def _base_type(hint: Any) -> tuple[Any, bool]:
    """The field's value type, and whether the field is a list (``list[float] | None`` -> (float, True))."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], True
    return hint, False


def _default_text(f: Field, value: Any) -> str:
    auto = f.metadata.get("auto")
    if value is None:
        return f"default: {AUTO}, {auto}" if auto else ""
    if isinstance(value, bool):
        return f"default: {'yes' if value else 'no'}"
    if isinstance(value, list):
        return f"default: {' '.join(str(v) for v in value)}"
    return f"default: {value:g}" if isinstance(value, float) else f"default: {value}"


def add_config_flags(
    parser: argparse.ArgumentParser, config_class: type[RunConfig], *, skip: frozenset[str] = frozenset()
) -> None:
    """One flag per command-line field of ``config_class`` (``--eps-warmup`` for ``eps_warmup``), typed from its
    annotation, in argument groups, each with its help and default from the field's metadata. Every flag's
    argparse default is None, so a command knows which fields the user set."""
    add_merged_config_flags(parser, {"": config_class}, skip=skip)


def add_merged_config_flags(
    parser: argparse.ArgumentParser, config_classes: dict[str, type[RunConfig]], *, skip: frozenset[str] = frozenset()
) -> None:
    """The flags of several configs behind one command (``{"images": TrainConfig, "text": TextTrainConfig}``):
    a field they share is one flag (its choices the union, its help and default each kind's where they differ);
    a field of one kind only says so (``text only: ...``). With one config: :func:`add_config_flags`."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name in GROUP_TITLES:
        groups[name] = parser.add_argument_group(GROUP_TITLES[name])
    entries: dict[str, list[tuple[str, Field, Any, Any]]] = {}
    for label, config_class in config_classes.items():
        hints = typing.get_type_hints(config_class)
        defaults = config_class.defaults()
        for f in fields(config_class):
            if f.name in skip or not f.metadata.get("cli", True):
                continue
            entries.setdefault(f.name, []).append((label, f, hints[f.name], defaults[f.name]))
    merged = len(config_classes) > 1
    for name, shared in entries.items():
        flag = "--" + name.replace("_", "-")
        kinds = {_base_type(hint) for _, _, hint, _ in shared}
        if len(kinds) > 1:
            raise TypeError(f"{flag}: the configs give it different types {sorted(map(str, kinds))}")
        ((kind, is_list),) = kinds
        first = shared[0][1]
        group = groups.get(first.metadata.get("group", "run"), groups["run"])
        full_help = _merged_help(shared, only=merged and len(shared) < len(config_classes))
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=full_help)
            continue
        choices = None
        if all(f.metadata.get("choices") for _, f, _, _ in shared):
            choices = list(dict.fromkeys(c for _, f, _, _ in shared for c in f.metadata["choices"]))
        parse = {int: integer(0), float: real()}.get(kind, plain_text)
        if any(default is None for *_, default in shared):
            parse = maybe_auto(parse)
        group.add_argument(
            flag, type=parse, default=None, choices=choices, nargs="+" if is_list else None,
            metavar=None if choices else name.upper(), help=full_help,
        )  # fmt: skip


def _merged_help(shared: list[tuple[str, Field, Any, Any]], *, only: bool) -> str:
    """``help (default: X)``; for kinds that differ: ``images: help; text: help (default: images X, text Y)``;
    for a field of one kind among several: ``text only: help (default: X)``."""
    helps = list(dict.fromkeys(f.metadata.get("help", "") for _, f, _, _ in shared))
    details = [(label, _default_text(f, default)) for label, f, _, default in shared]
    label = shared[0][0]
    if len(helps) == 1:
        text = f"{label} only: {helps[0]}" if only else helps[0]
    else:
        text = "; ".join(f"{lab}: {f.metadata.get('help', '')}" for lab, f, _, _ in shared)
    distinct = list(dict.fromkeys(detail for _, detail in details))
    if len(distinct) == 1:
        return f"{text} ({distinct[0]})" if distinct[0] else text
    parts = [f"{lab} {detail.removeprefix('default: ') or AUTO}" for lab, detail in details]
    return f"{text} (default: {', '.join(parts)})"


def chosen_fields(args: argparse.Namespace, config_class: type[RunConfig]) -> dict[str, Any]:
    """The config fields the user set on the command line (``auto`` reads as not set: the config decides)."""
    return {f.name: getattr(args, f.name) for f in fields(config_class) if getattr(args, f.name, None) is not None}


# ---- attacks ---------------------------------------------------------------------------------------------------


def add_attack_flag(parser: argparse.ArgumentParser, *, default: list[str], explicit: bool = False) -> None:
    """``--attack NAME [NAME ...]``: names of the attack registry (advfast.eval.attacks), its help listing each.
    ``explicit``: the argparse default is None (the command applies ``default`` itself, and knows whether the
    user chose)."""
    from advfast.eval.attacks import ATTACKS

    listed = "; ".join(f"{name}: {spec.summary}" for name, spec in ATTACKS.items())
    parser.add_argument(
        "--attack", nargs="+", choices=list(ATTACKS), default=None if explicit else default, metavar="NAME",
        help=f"attacks to run, in order (default: {' '.join(default)}). {listed}",
    )  # fmt: skip


# ---- run folders ---------------------------------------------------------------------------------------------


def add_resume_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--resume", nargs="?", const="", default=None, metavar="RUN",
        help=f"continue the {what} run in folder RUN (written there, nowhere else); without RUN: the --out folder",
    )  # fmt: skip


def resume_folder(args: argparse.Namespace) -> Path | None:
    """The folder ``--resume`` names (``--resume`` alone: ``--out``), or None for a fresh run."""
    if args.resume is None:
        return None
    if args.resume == "":
        if args.out is None:
            raise CommandError("--resume without a folder continues the --out folder: give --out RUN too")
        return Path(args.out)
    folder = Path(args.resume)
    if args.out is not None and Path(args.out).resolve() != (folder if folder.is_dir() else folder.parent).resolve():
        raise CommandError(
            f"--resume {args.resume} continues that run in its own folder; --out {args.out} names another. To "
            f"continue into a new folder, copy the run first (cp -r {args.resume} {args.out}) and resume the copy"
        )
    return folder


def fit_run(folder: Path | None, chosen: dict[str, Any], *, resume: Any, start: Any, command: str) -> Any:
    """Fit the run: resumed from ``folder`` (``resume(folder, **chosen)``; the flags given override its config,
    and it writes into ``folder``, never a recorded ``out``) or started fresh (``start(chosen)``). Prints, from
    the main process, where it resumed, how to resume a resumable stop, and the run folder."""
    if folder is not None:
        chosen.pop("out", None)
        trainer = resume(folder, **chosen)
        if trainer.ctx.is_main:
            print(f"resuming {trainer.out} at epoch {trainer.progress.epoch + 1}, step {trainer.progress.step}")
    else:
        trainer = start(chosen)
    trainer.fit()
    if trainer.ctx.is_main:
        stop = trainer.progress.stop
        if stop is not None and stop.reason.resumable:
            # The step limit is kept in the run's config: resuming past it needs a new one (0: none).
            more = " --max-steps 0" if stop.reason is StopReason.MAX_STEPS else ""
            print(f"stopped: {stop} (resume with: advfast {command} --resume {trainer.out}{more})")
        print(f"run folder: {trainer.out}")
    return trainer
