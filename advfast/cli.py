"""``advfast train | eval | attack | bench``: the command line."""

from __future__ import annotations

import argparse
import json
import sys
import typing
from dataclasses import MISSING, fields
from pathlib import Path

EXAMPLES = {
    "train": """examples:
  advfast train --data mnist --method pgd --eps 0.3 --epochs 10 --out runs/mnist-pgd
  advfast train --data digits --method fgsm-rs --eps 0.1 --epochs 20 --out runs/digits-fast
  torchrun --nproc_per_node=2 -m advfast.cli train --data mnist --method trades --out runs/mnist-trades
  advfast train --resume runs/mnist-pgd --epochs 20      # continue (here: to 20 epochs)""",
    "eval": """examples:
  advfast eval runs/mnist-pgd/last.pt --eps 0.1 0.2 0.3
  advfast eval runs/mnist-pgd/last.pt --eps 0.3 --steps 100 --restarts 5 --out runs/mnist-pgd/pgd100""",
    "attack": """examples:
  advfast attack runs/mnist-pgd/last.pt --eps 0.3 --out adversarial.npz
  advfast attack runs/mnist-pgd/last.pt --eps 2.0 --norm l2 --steps 100 --limit 1000 --out l2.npz""",
    "augment": """examples:
  advfast augment --data mnist --generator cgan --epochs 30 --out runs/mnist-gan
  advfast augment --data fashion-mnist --generator vae --epochs 20 --out runs/fashion-vae
  advfast train --data mnist --subset 0.1 --augment runs/mnist-gan/generator.pt --synthetic-ratio 0.5 \\
                --synthetic-adversarial --method pgd --eps 0.3 --out runs/mnist-pgd-aug""",
    "bench": """examples:
  advfast bench                      # the fused steps vs eager PyTorch and a copy, 16M elements
  advfast bench --elements 64M --device cuda""",
}

HELP = {
    "data": "digits, mnist, fashion-mnist, a .npz file (x, y) or a folder of class sub-folders",
    "subset": "keep this fraction of the training split (stratified)",
    "model": "digits-cnn, mnist-cnn, mnist-cnn-small, cnn, or auto (by input size)",
    "method": "standard, mixed, pgd, fgsm-rs, free, trades",
    "eps": "attack radius in input units (images in [0, 1])",
    "alpha": "attack step (default per method: PGD 2.5 eps/steps, FGSM-RS 1.25 eps)",
    "steps": "attack steps (pgd, trades, mixed with --inner pgd)",
    "lam": "mixed: weight of the adversarial loss",
    "inner": "mixed: fgsm or pgd",
    "beta": "trades: weight of the KL term",
    "replays": "free: replays of each minibatch",
    "attack_mode": "auto, as_is (the model's train mode, BatchNorm statistics restored) or eval",
    "schedule": "constant, cosine, one-cycle, piecewise, adaptive (1/sqrt t)",
    "eps_warmup": "fraction of training over which eps ramps up from 0",
    "accumulate": "batches per optimizer step",
    "amp": "off, bf16, fp16 (fp16 on CUDA only)",
    "checkpoint_every": "optimizer steps between checkpoints (0: each epoch)",
    "max_steps": "stop with a checkpoint after this many steps (0: no limit)",
    "val_size": "validation samples for the per-epoch clean/PGD accuracy",
    "overfit_guard": "stop when validation PGD accuracy drops this far below its best (default 0.2 for fgsm-rs)",
    "eval_eps": "radii of the final report (default eps/3, 2eps/3, eps)",
    "out": "run folder (train: config.json, metrics.jsonl, last.pt, report.json/md, plots; augment: generator.pt, "
    "samples.png, quality.json)",
    "device": "cpu, cuda, cuda:1 ... (default: cuda if available)",
    "augment": "a generator checkpoint (advfast augment) whose samples join every batch",
    "synthetic_ratio": "share of generated samples in each augmented batch, in [0, 1)",
    "synthetic_adversarial": "make the generated samples adversarial (PGD at eps) before training on them",
    "generator": "cgan (conditional DCGAN) or vae (conditional VAE)",
    "label_smoothing": "cgan: one-sided label smoothing (real target 1 - s)",
    "diversity": "cgan: weight of the mode-seeking term against one image per class (0: plain loss)",
    "sample_every": "epochs between sample grids (0: only at the end)",
    "quality_samples": "generated samples for the Frechet distance and label accuracy",
    "classifier_epochs": "epochs of the real-data classifier that measures quality",
}


def _add_config_flags(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One flag per field of a config dataclass (``--eps-warmup`` for ``eps_warmup``), typed from its
    annotation."""
    hints = typing.get_type_hints(config_class)
    for field in fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        hint = hints[field.name]
        default = field.default if field.default is not MISSING else None
        help_text = HELP.get(field.name, "")
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif field.name == "eval_eps":
            parser.add_argument(flag, type=float, nargs="+", default=None, help=help_text)
        else:
            kind = {int: int, float: float, str: str}.get(hint, float if "float" in str(hint) else str)
            parser.add_argument(flag, type=kind, default=None, help=f"{help_text} (default: {default})".strip())


def _train(args: argparse.Namespace) -> int:
    from advfast.train import TrainConfig, Trainer

    chosen = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    if args.resume:
        path = Path(args.resume)
        path = path / "last.pt" if path.is_dir() else path
        trainer = Trainer.resume(path, **chosen)
        print(f"resuming {path} at epoch {trainer.progress.epoch + 1}, step {trainer.progress.step}")
    else:
        trainer = Trainer(TrainConfig(**chosen))
    metrics = trainer.fit()
    if trainer.ctx.is_main:
        if trainer.progress.stopped:
            print(f"stopped: {trainer.progress.stopped} (resume with: advfast train --resume {trainer.out})")
        if metrics:
            print(json.dumps(metrics[-1]))
        print(f"run folder: {trainer.out}")
    return 0


def _augment(args: argparse.Namespace) -> int:
    from advfast.gan import GeneratorConfig, GeneratorTrainer
    from advfast.train.generative import run_augment

    chosen = {f.name: getattr(args, f.name) for f in fields(GeneratorConfig) if getattr(args, f.name) is not None}
    if args.resume:
        path = Path(args.resume)
        path = path / "generator.pt" if path.is_dir() else path
        trainer = GeneratorTrainer.resume(path, **chosen)
        print(f"resuming {path} at epoch {trainer.epoch + 1}, step {trainer.step}")
    else:
        trainer = GeneratorTrainer(GeneratorConfig(**chosen))
    quality = run_augment(trainer)
    if quality is None:
        print(f"stopped: {trainer.stopped} (resume with: advfast augment --resume {trainer.out})")
    else:
        print(json.dumps(quality, indent=2))
    print(f"run folder: {trainer.out}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import torch

    from advfast.train.evaluation import data_for, load_trained, report_run

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, config, record = load_trained(args.checkpoint, device)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent
    paths = report_run(
        model, data_for(config), config, out, eps=args.eps, steps=args.steps, restarts=args.restarts,
        metrics=record.get("metrics"), progress=not args.no_progress, sanity=not args.no_sanity,
    )  # fmt: skip
    print(Path(paths["md"]).read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def _attack(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    import advfast
    from advfast.train.evaluation import data_for, load_trained

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, config, _ = load_trained(args.checkpoint, device)
    split = getattr(data_for(config), args.split)
    x_all, y_all = split.x[: args.limit or None], split.y[: args.limit or None]
    generator = torch.Generator(device=device).manual_seed(args.seed)
    adversarial, correct_clean, correct_adv = [], 0, 0
    for start in range(0, len(x_all), args.batch_size):
        x = x_all[start : start + args.batch_size].to(device)
        y = y_all[start : start + args.batch_size].to(device)
        x_adv = advfast.pgd(
            model, x, y, eps=args.eps, norm=args.norm, steps=args.steps, restarts=args.restarts, early_stop=True,
            generator=generator,
        )  # fmt: skip
        with torch.no_grad():
            correct_clean += (model(x).argmax(1) == y).sum().item()
            correct_adv += (model(x_adv).argmax(1) == y).sum().item()
        adversarial.append(x_adv.cpu())
    x_adv_all = torch.cat(adversarial)
    np.savez_compressed(args.out, x=x_adv_all.numpy(), y=y_all.numpy(), x_clean=x_all.numpy())
    n = len(x_all)
    print(
        f"{args.split}: {n} samples, clean accuracy {correct_clean / n:.2%}, PGD-{args.steps} ({args.norm}, eps "
        f"{args.eps:g}, {args.restarts} restart(s)) accuracy {correct_adv / n:.2%}; wrote {args.out}"
    )
    return 0


def _bench(args: argparse.Namespace) -> int:
    from advfast.bench import run_bench

    print(run_bench(args.elements, args.device, args.repeats))
    return 0


def _elements(text: str) -> int:
    scale = {"k": 2**10, "m": 2**20, "g": 2**30}.get(text[-1].lower(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def build_parser() -> argparse.ArgumentParser:
    from advfast.gan import GeneratorConfig
    from advfast.train import TrainConfig

    parser = argparse.ArgumentParser(
        prog="advfast",
        description="Adversarial training, evaluation and attacks on fused perturbation kernels.",
        epilog="\n\n".join(EXAMPLES.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=help_text, description=help_text, epilog=EXAMPLES[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip

    train = command("train", "train a classifier (adversarially), with checkpoints, report and plots")
    train.add_argument("--resume", metavar="RUN", help="continue the run in this folder (or checkpoint)")
    _add_config_flags(train, TrainConfig)
    train.set_defaults(run=_train)

    augment = command("augment", "train a class-conditional generator (cgan, vae) and measure its samples")
    augment.add_argument("--resume", metavar="RUN", help="continue the generator run in this folder")
    _add_config_flags(augment, GeneratorConfig)
    augment.set_defaults(run=_augment)

    evaluate = command("eval", "robust accuracy of a trained checkpoint on its test split, with a report")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("--eps", type=float, nargs="+", required=True)
    evaluate.add_argument("--steps", type=int, default=40, help="PGD steps (default 40)")
    evaluate.add_argument("--restarts", type=int, default=1)
    evaluate.add_argument("--out", help="report folder (default: the checkpoint's)")
    evaluate.add_argument("--no-sanity", action="store_true", help="skip the gradient-masking checks (4 more runs)")
    evaluate.add_argument("--device")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.set_defaults(run=_eval)

    attack = command("attack", "adversarial examples of a checkpoint's data, saved as .npz")
    attack.add_argument("checkpoint")
    attack.add_argument("--eps", type=float, required=True)
    attack.add_argument("--norm", default="linf", choices=["linf", "l2"])
    attack.add_argument("--steps", type=int, default=40)
    attack.add_argument("--restarts", type=int, default=1)
    attack.add_argument("--split", default="test", choices=["train", "val", "test"])
    attack.add_argument("--limit", type=int, default=0, help="first N samples only (0: all)")
    attack.add_argument("--batch-size", type=int, default=256)
    attack.add_argument("--seed", type=int, default=0)
    attack.add_argument("--device")
    attack.add_argument("--out", required=True, help="output .npz (x, y, x_clean)")
    attack.set_defaults(run=_attack)

    bench = command("bench", "time the fused steps against eager PyTorch and a plain copy on this machine")
    bench.add_argument("--elements", type=_elements, default=16 * 2**20, help="e.g. 1M, 16M, 64M")
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--repeats", type=int, default=20)
    bench.set_defaults(run=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from advfast.data import DatasetUnavailable
    from advfast.train import CheckpointError

    try:
        return args.run(args)
    except (ValueError, DatasetUnavailable, CheckpointError, FileNotFoundError, FloatingPointError) as exc:
        print(f"advfast {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
