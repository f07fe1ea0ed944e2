"""``advfast train | augment | eval | attack | bench``: the command line.

Each subcommand is one module of this package with ``NAME``, ``HELP``, ``EXAMPLES``, ``add_arguments(parser)``
and ``run(args) -> exit code``; :data:`COMMANDS` lists them (adding a command is adding a file and a line).
Errors the user can fix print as one line, ``advfast CMD: error: ...``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from advfast.cli import attack, augment, bench, evaluate, llm_attack, llm_train, train

COMMANDS: tuple[ModuleType, ...] = (train, augment, evaluate, attack, bench, llm_attack, llm_train)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and the parser of each subcommand, by name."""
    examples = "\n\n".join(f"{command.NAME}:\n{command.EXAMPLES}" for command in COMMANDS)
    parser = argparse.ArgumentParser(
        prog="advfast",
        description="Adversarial training, evaluation and attacks on fused perturbation kernels.",
        epilog=f"examples (advfast COMMAND --help for all options):\n\n{examples}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    by_name = {}
    for command in COMMANDS:
        sub = subparsers.add_parser(
            command.NAME, help=command.HELP, description=command.HELP, epilog=f"examples:\n{command.EXAMPLES}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        command.add_arguments(sub)
        sub.set_defaults(handler=command.run)
        by_name[command.NAME] = sub
    return parser, by_name


def main(argv: list[str] | None = None) -> int:
    parser, subcommands = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the subcommand's usage, not the top level's
        subcommands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    from advfast.cli.errors import report_error, user_errors

    try:
        return args.handler(args)
    except user_errors() as exc:
        return report_error(args.command, exc)
    except KeyboardInterrupt:
        print(f"advfast {args.command}: interrupted", file=sys.stderr)
        return 130
