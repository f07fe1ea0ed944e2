"""``advfast eval``: robust accuracy of a trained run on its test split, with a report. Image runs: the attack
registry at each eps; text runs (told apart by the checkpoint's role): clean accuracy and scikit-learn's
report, embedding-space PGD at each eps, token substitution at each budget (``--discrete``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from advfast.cli.common import CommandError, add_attack_flag, integer, real

NAME = "eval"
HELP = "robust accuracy of a trained run (images or text) on its test split, with a report (JSON, Markdown, plot)"
EXAMPLES = """\
  advfast eval runs/mnist-pgd --eps 0.1 0.2 0.3
  advfast eval runs/mnist-pgd --eps 0.3 --steps 100 --restarts 5 --out runs/mnist-pgd/pgd100
  advfast eval runs/mnist-pgd --eps 0.3 --attack autoattack --no-sanity --out runs/mnist-pgd/aa
  advfast eval runs/rt-freelb --eps 0.5 1.0 2.0 --discrete 1 2 4 --limit 200"""

IMAGE_DEFAULTS = {"attack": ["fgsm", "pgd"], "steps": 40, "restarts": 1, "batch_size": 256}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run folder of advfast train (or its last.pt)")
    add_attack_flag(parser, default=IMAGE_DEFAULTS["attack"], explicit=True)
    parser.add_argument("--eps", type=real(minimum=0.0), nargs="+", metavar="EPS",
                        help="radii to evaluate, in input units for images, embedding units for text (default: "
                        "images the run's eps/3, 2 eps/3, eps; text the run's eval-eps)")  # fmt: skip
    parser.add_argument("--discrete", type=integer(1), nargs="+", metavar="K",
                        help="text runs: token-substitution budgets, tokens changed at most (default: the run's "
                        "eval-budgets)")  # fmt: skip
    parser.add_argument("--norm", choices=["linf", "l2"],
                        help="threat model (default: images the run's, text the run's eval-norm)")  # fmt: skip
    parser.add_argument("--steps", type=integer(1),
                        help="PGD steps per restart (default: images 40, text the run's eval-steps)")  # fmt: skip
    parser.add_argument("--restarts", type=integer(1),
                        help="PGD random restarts (default: images 1, text the run's eval-restarts)")  # fmt: skip
    parser.add_argument("--batch-size", type=integer(1),
                        help="samples per attack batch (default: images 256, text the run's batch size)")  # fmt: skip
    parser.add_argument("--limit", type=integer(0), default=0, help="the first N test samples only (default: 0, all)")
    parser.add_argument("--out", metavar="FOLDER", help="report folder (default: RUN/eval)")
    parser.add_argument("--no-sanity", action="store_true",
                        help="images: skip the gradient-masking checks (4 more attacks)")  # fmt: skip
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from advfast.runtime.loop import checkpoint_path
    from advfast.text.training.saved import checkpoint_role
    from advfast.text.training.trainer import CHECKPOINT, ROLE

    if checkpoint_role(checkpoint_path(args.run, CHECKPOINT)) == ROLE:
        return run_text(args)
    return run_images(args)


def run_images(args: argparse.Namespace) -> int:
    from advfast.eval import published_for, report_run
    from advfast.runtime import RunFolder, resolve_device
    from advfast.train import load_classifier

    if args.discrete is not None:
        raise CommandError(f"--discrete (token substitution) applies to text runs only; {args.run} is an image run")
    trained = load_classifier(args.run, resolve_device(args.device))
    config = trained.config
    out = RunFolder(Path(args.out) if args.out else trained.path.parent / "eval")
    with out:  # taken (locked, checked writable) before the work, not after it
        data = trained.data()
        norm = args.norm or config.norm
        eps = args.eps or config.eval_eps or [config.eps]
        paths = report_run(
            trained.model, data, out.path, title=f"{config.method} on {data.name}, trained at eps {config.eps:g}",
            eps=sorted(eps), norm=norm, steps=args.steps or IMAGE_DEFAULTS["steps"],
            restarts=args.restarts or IMAGE_DEFAULTS["restarts"], attacks=args.attack or IMAGE_DEFAULTS["attack"],
            batch_size=args.batch_size or IMAGE_DEFAULTS["batch_size"], limit=args.limit, seed=config.seed,
            published=published_for(data.name, config.method, config.eps, norm),
            config=config.to_dict(), metrics=trained.record.get("metrics"), progress=not args.no_progress,
            sanity=not args.no_sanity,
        )  # fmt: skip
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def run_text(args: argparse.Namespace) -> int:
    from advfast.runtime import RunFolder, resolve_device
    from advfast.text.training import evaluate_text_classifier, load_text_run, write_text_report
    from advfast.text.training.evaluation import remove_progress
    from advfast.text.training.report import headline
    from advfast.text.training.trainer import run_title

    image_only = [flag for flag, given in (("--attack", args.attack is not None), ("--no-sanity", args.no_sanity))
                  if given]  # fmt: skip
    if image_only:
        raise CommandError(f"{', '.join(image_only)} applies to image runs only; {args.run} is a text run")
    trained = load_text_run(args.run, resolve_device(args.device))
    config = trained.config
    out = RunFolder(Path(args.out) if args.out else trained.path.parent / "eval")
    with out:
        data = trained.data()
        if list(data.classes) != trained.classes:
            raise CommandError(f"{args.run}: trained on classes {trained.classes}, the data now has {data.classes}")
        result = evaluate_text_classifier(
            trained.model, trained.tokenizer, data.test, class_names=data.classes,
            eps=sorted(args.eps or config.eval_eps), budgets=sorted(args.discrete or config.eval_budgets),
            norm=args.norm or config.eval_norm, steps=args.steps or config.eval_steps,
            restarts=args.restarts or config.eval_restarts, candidates=config.eval_candidates,
            batch_size=args.batch_size or config.batch_size, max_length=config.max_length, limit=args.limit,
            seed=config.seed, progress=not args.no_progress, checkpoint_dir=out.path,
        )  # fmt: skip
        extra = {"data": data.describe(), "config": config.to_dict(), "checkpoint": str(trained.path)}
        paths = write_text_report(
            result, out.path, title=run_title(config, data.name), extra=extra, metrics=trained.record.get("metrics")
        )
        remove_progress(out.path)
    print(headline(result))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
