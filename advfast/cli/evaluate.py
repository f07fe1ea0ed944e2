"""``advfast eval``: robust accuracy of a trained run on its test split, with a report."""

from __future__ import annotations

import argparse
from pathlib import Path

from advfast.cli.common import add_attack_flag, integer, real

NAME = "eval"
HELP = "robust accuracy of a trained run on its test split, with a report (JSON, Markdown, plot)"
EXAMPLES = """\
  advfast eval runs/mnist-pgd --eps 0.1 0.2 0.3
  advfast eval runs/mnist-pgd --eps 0.3 --steps 100 --restarts 5 --out runs/mnist-pgd/pgd100
  advfast eval runs/mnist-pgd --eps 0.3 --attack autoattack --no-sanity --out runs/mnist-pgd/aa"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run folder of advfast train (or its last.pt)")
    add_attack_flag(parser, default=["fgsm", "pgd"])
    parser.add_argument("--eps", type=real(minimum=0.0), nargs="+", metavar="EPS",
                        help="radii to evaluate, in input units (default: the run's eps/3, 2 eps/3, eps)")  # fmt: skip
    parser.add_argument("--norm", choices=["linf", "l2"], help="threat model (default: the run's)")
    parser.add_argument("--steps", type=integer(1), default=40, help="PGD steps per restart (default: 40)")
    parser.add_argument("--restarts", type=integer(1), default=1, help="PGD random restarts (default: 1)")
    parser.add_argument("--batch-size", type=integer(1), default=256, help="samples per attack batch (default: 256)")
    parser.add_argument("--limit", type=integer(0), default=0, help="the first N test samples only (default: 0, all)")
    parser.add_argument("--out", metavar="FOLDER", help="report folder (default: RUN/eval)")
    parser.add_argument("--no-sanity", action="store_true", help="skip the gradient-masking checks (4 more attacks)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from advfast.eval import published_for, report_run
    from advfast.runtime import RunFolder, resolve_device
    from advfast.train import load_classifier

    trained = load_classifier(args.run, resolve_device(args.device))
    config = trained.config
    out = RunFolder(Path(args.out) if args.out else trained.path.parent / "eval")
    with out:  # taken (locked, checked writable) before the work, not after it
        data = trained.data()
        norm = args.norm or config.norm
        eps = args.eps or config.eval_eps or [config.eps]
        paths = report_run(
            trained.model, data, out.path, title=f"{config.method} on {data.name}, trained at eps {config.eps:g}",
            eps=sorted(eps), norm=norm, steps=args.steps, restarts=args.restarts, attacks=args.attack,
            batch_size=args.batch_size, limit=args.limit, seed=config.seed,
            published=published_for(data.name, config.method, config.eps, norm),
            config=config.to_dict(), metrics=trained.record.get("metrics"), progress=not args.no_progress,
            sanity=not args.no_sanity,
        )  # fmt: skip
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
