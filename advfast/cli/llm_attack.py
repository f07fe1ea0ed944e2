"""``advfast llm-attack``: how easily a chat model's behaviour is overturned, on a task's held-out prompts: the
embedding attack over an eps grid, or GCG over step budgets, judged on the generations; with a report."""

from __future__ import annotations

import argparse
from pathlib import Path

from advfast.cli.common import CommandError, integer, real

NAME = "llm-attack"
HELP = "attack a chat model's prompts (embedding attack over eps, GCG over steps), judged on its generations"
EXAMPLES = """\
  advfast llm-attack --model smollm2 --task secret --attack embedding --eps 0.02 0.05 0.1 --out runs/smol-attack
  advfast llm-attack runs/smol-cat --task secret --attack gcg --steps 20 100 --limit 20 --out runs/smol-cat-gcg
  advfast llm-attack runs/smol-cat --attack embedding --norm unconstrained --steps 50 --out runs/smol-cat-free"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", nargs="?", help="a run folder of advfast llm-train (default: --model)")
    parser.add_argument(
        "--model",
        default=None,
        help="without RUN: a registered model (smollm2) or a local from_pretrained folder (default: smollm2)",
    )
    parser.add_argument("--task", default=None, help="the task (default: the run's, else secret)")
    parser.add_argument("--seed", type=integer(0), default=None, help="the task's seed (default: the run's, else 0)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"], help="which prompts (test)")
    parser.add_argument("--limit", type=integer(0), default=0, help="the first N prompts of the split (0: all)")
    parser.add_argument("--attack", default="embedding", choices=["embedding", "gcg"], help="the attack")
    parser.add_argument(
        "--eps",
        type=real(minimum=0.0),
        nargs="+",
        default=[0.05],
        help="embedding: radii, relative to the mean embedding norm (default: 0.05)",
    )
    parser.add_argument(
        "--steps",
        type=integer(1),
        nargs="+",
        default=None,
        help="attack steps (default: 50 embedding, 100 gcg); gcg: several budgets, one search",
    )
    parser.add_argument(
        "--norm",
        default="l2-per-token",
        choices=["l2-per-token", "linf-per-token", "unconstrained"],
        help="embedding: the ball (default: l2-per-token)",
    )
    parser.add_argument("--alpha", type=real(positive=True), default=None, help="embedding: step, relative like eps")
    parser.add_argument(
        "--region",
        default="user",
        choices=["user", "prompt"],
        help="embedding: the tokens that move (default: user, the user's message)",
    )
    parser.add_argument("--suffix", type=integer(0), default=0, help="embedding: N free suffix embeddings instead")
    parser.add_argument("--search-width", type=integer(1), default=64, help="gcg: candidates per step (64)")
    parser.add_argument("--topk", type=integer(1), default=64, help="gcg: tokens per position to draw from (64)")
    parser.add_argument(
        "--batch-size",
        type=integer(1),
        default=8,
        help="prompts (embedding) or candidates (gcg) per forward pass (default: 8 / search width)",
    )
    parser.add_argument("--max-new-tokens", type=integer(1), default=24, help="tokens generated per answer (24)")
    parser.add_argument("--no-utility", action="store_true", help="with RUN: skip the benign-prompt utility check")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    parser.add_argument("--out", metavar="FOLDER", help="report folder (default: RUN/llm-attack-ATTACK)")


def run(args: argparse.Namespace) -> int:
    from advfast.llm import load_model, load_task, load_trained
    from advfast.llm.evaluate import attack_success, clean_behaviour, utility
    from advfast.llm.report import write_report
    from advfast.runtime import RunFolder, resolve_device

    device = resolve_device(args.device)
    if args.run is None and args.out is None:
        raise CommandError("--out is needed without RUN (the folder the report goes to)")
    if args.run is not None and args.model is not None:
        raise CommandError("give RUN or --model, not both: RUN already names its base model")
    out = RunFolder(Path(args.out) if args.out else Path(args.run) / f"llm-attack-{args.attack}")
    with out:  # taken (locked, checked writable) before loading anything
        references = None
        if args.run is not None:
            trained = load_trained(args.run, device=device)
            model, tokenizer, config = trained.model, trained.tokenizer, trained.config
            task = load_task(args.task or config.task, config.seed if args.seed is None else args.seed)
            name = f"{args.run} ({config.method}, {config.model})"
            if not args.no_utility and (args.task in (None, config.task)):
                references = trained.record["references"]["benign_test"]
        else:
            model, tokenizer = load_model(args.model or "smollm2", device=device)
            task = load_task(args.task or "secret", args.seed or 0)
            name = args.model or "smollm2"
        examples = task.split(args.split)[: args.limit or None]
        if not examples:
            raise CommandError(f"the {args.split} split of {task.name} is empty")
        steps = args.steps or ([100] if args.attack == "gcg" else [50])
        if args.attack == "embedding":
            if len(steps) > 1:
                raise CommandError("the embedding attack takes one --steps value (its eps grid is --eps)")
            eps = [None] if args.norm == "unconstrained" else sorted(args.eps)
            options = {
                "norm": args.norm,
                "alpha": args.alpha,
                "region": args.region,
                "suffix": args.suffix,
                "batch_size": args.batch_size,
                "max_new_tokens": args.max_new_tokens,
            }
        else:
            eps = []
            options = {
                "search_width": args.search_width,
                "topk": args.topk,
                "max_new_tokens": args.max_new_tokens,
                "batch_size": args.search_width if args.batch_size == 8 else args.batch_size,
            }
        print(f"{name}: {len(examples)} {args.split} prompts of {task.name}")
        document = {
            "title": f"{args.attack} attack on {name}",
            "model": name,
            "task": task.describe(),
            "split": args.split,
        }
        document["clean"] = clean_behaviour(model, tokenizer, examples, max_new_tokens=args.max_new_tokens)
        print(f"no attack: leak {document['clean']['leak_rate']:.1%}, refusal {document['clean']['refusal_rate']:.1%}")
        document["attacks"] = attack_success(
            model, tokenizer, examples, attack=args.attack, eps=eps, steps=steps, options=options, say=print
        )
        if references is not None:
            benign = task.benign_test[: min(args.limit or len(references), len(references))]
            document["utility"] = utility(
                model, tokenizer, benign, references[: len(benign)], max_new_tokens=args.max_new_tokens
            )
            u = document["utility"]
            print(
                f"benign: agreement with the original model {u['agreement']:.1%}, word F1 {u['word_f1']:.3f}, "
                f"reference loss {u['reference_loss']:.3f}, leak {u['leak_rate']:.1%}"
            )
        paths = write_report(out.path, document)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
