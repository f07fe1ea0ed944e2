"""``advfast attack``: adversarial examples of a trained run's data, saved as .npz."""

from __future__ import annotations

import argparse
import io

from advfast.cli.common import add_attack_flag, integer, real

NAME = "attack"
HELP = "adversarial examples of a trained run's data (any attacks of the registry, in turn), saved as .npz"
EXAMPLES = """\\
  advfast attack runs/mnist-pgd --eps 0.3 --out adversarial.npz
  advfast attack runs/mnist-pgd --eps 2.0 --norm l2 --steps 100 --limit 1000 --out l2.npz
  advfast attack runs/mnist-pgd --eps 0.3 --attack autoattack --limit 1000 --out aa.npz"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run folder of advfast train (or its last.pt)")
    parser.add_argument("--eps", type=real(minimum=0.0), required=True, help="attack radius, in input units")
    add_attack_flag(parser, default=["pgd"])
    parser.add_argument("--norm", choices=["linf", "l2"], help="threat model (default: the run's)")
    parser.add_argument("--steps", type=integer(1), default=40, help="PGD steps per restart (default: 40)")
    parser.add_argument("--restarts", type=integer(1), default=1, help="PGD random restarts (default: 1)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"], help="which split (default: test)")
    parser.add_argument("--limit", type=integer(0), default=0, help="the first N samples only (default: 0, all)")
    parser.add_argument("--batch-size", type=integer(1), default=256, help="samples per attack batch (default: 256)")
    parser.add_argument("--seed", type=integer(0), default=0, help="seeds the random draws (default: 0)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    parser.add_argument(
        "--out", required=True, metavar="FILE",
        help="output .npz: x (adversarial: the worst case per point), y, x_clean, broken_by (index into attacks, "
        "-1 robust, -2 misclassified clean), attacks",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from advfast.eval import get_attack, run_ensemble
    from advfast.runtime import atomic_write, check_writable_file, resolve_device
    from advfast.train import load_classifier

    device = resolve_device(args.device)
    trained = load_classifier(args.run, device)
    split = getattr(trained.data(), args.split)
    x_all, y_all = split.x[: args.limit or None], split.y[: args.limit or None]
    norm = args.norm or trained.config.norm
    # Fail now, not after the attack: the file holds x and x_clean (float32), y and broken_by.
    check_writable_file(args.out, needed_bytes=2 * x_all.numel() * 4 + y_all.numel() * 9)
    stages = []
    for name in dict.fromkeys(args.attack):
        spec = get_attack(name)
        given = {"steps": args.steps, "restarts": args.restarts} if name == "pgd" else {}
        stages.append((spec, spec.settings(given)))
    result = run_ensemble(
        trained.model, x_all, y_all, stages, eps=args.eps, norm=norm, bounds=(0.0, 1.0), seed=args.seed,
        batch_size=args.batch_size, device=device,
    )  # fmt: skip
    broken_by = result.broken_by.long() - 1  # stage j >= 1 is attack j - 1
    broken_by[result.broken_by == 0] = -2  # misclassified clean
    broken_by[result.broken_by == -1] = -1  # robust
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, x=result.x_adv.numpy(), y=y_all.numpy(), x_clean=x_all.numpy(), broken_by=broken_by.numpy(),
        attacks=np.array([spec.name for spec, _ in stages]),
    )  # fmt: skip
    atomic_write(args.out, lambda file: file.write(buffer.getbuffer()))
    labels = [spec.label(settings) for spec, settings in stages]
    after = ", then ".join(
        f"{label} {result.accuracy[spec.name]:.2%}" for label, (spec, _) in zip(labels, stages, strict=True)
    )
    print(
        f"{args.split}: {len(x_all)} samples ({norm}, eps {args.eps:g}), clean accuracy "
        f"{result.accuracy['clean']:.2%}, robust accuracy after {after}; wrote {args.out}"
    )
    return 0
