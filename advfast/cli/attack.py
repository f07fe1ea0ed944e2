"""``advfast attack``: adversarial examples of a trained run's data, saved as .npz."""

from __future__ import annotations

import argparse
import io

from advfast.cli.common import integer, real

NAME = "attack"
HELP = "adversarial examples of a trained run's data (PGD), saved as .npz"
EXAMPLES = """\
  advfast attack runs/mnist-pgd --eps 0.3 --out adversarial.npz
  advfast attack runs/mnist-pgd --eps 2.0 --norm l2 --steps 100 --limit 1000 --out l2.npz"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run folder of advfast train (or its last.pt)")
    parser.add_argument("--eps", type=real(minimum=0.0), required=True, help="attack radius, in input units")
    parser.add_argument("--norm", choices=["linf", "l2"], help="threat model (default: the run's)")
    parser.add_argument("--steps", type=integer(1), default=40, help="PGD steps per restart (default: 40)")
    parser.add_argument("--restarts", type=integer(1), default=1, help="PGD random restarts (default: 1)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"], help="which split (default: test)")
    parser.add_argument("--limit", type=integer(0), default=0, help="the first N samples only (default: 0, all)")
    parser.add_argument("--batch-size", type=integer(1), default=256, help="samples per attack batch (default: 256)")
    parser.add_argument("--seed", type=integer(0), default=0, help="seeds the random starts (default: 0)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    parser.add_argument("--out", required=True, metavar="FILE", help="output .npz with x (adversarial), y, x_clean")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from advfast.attacks import pgd
    from advfast.eval import predict
    from advfast.runtime import atomic_write, check_writable_file, resolve_device
    from advfast.train import load_classifier

    device = resolve_device(args.device)
    trained = load_classifier(args.run, device)
    split = getattr(trained.data(), args.split)
    x_all, y_all = split.x[: args.limit or None], split.y[: args.limit or None]
    norm = args.norm or trained.config.norm
    # Fail now, not after the attack: the file holds x and x_clean (float32) and y.
    check_writable_file(args.out, needed_bytes=2 * x_all.numel() * 4 + y_all.numel() * 8)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    x_adv_all = torch.empty_like(x_all)
    for start in range(0, len(x_all), args.batch_size):
        x = x_all[start : start + args.batch_size].to(device)
        y = y_all[start : start + args.batch_size].to(device)
        x_adv = pgd(
            trained.model, x, y, eps=args.eps, norm=norm, steps=args.steps, restarts=args.restarts,
            early_stop=True, generator=generator,
        )  # fmt: skip
        x_adv_all[start : start + len(x)] = x_adv.cpu()
    clean = (predict(trained.model, x_all) == y_all).double().mean().item()
    robust = (predict(trained.model, x_adv_all) == y_all).double().mean().item()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=x_adv_all.numpy(), y=y_all.numpy(), x_clean=x_all.numpy())
    atomic_write(args.out, lambda file: file.write(buffer.getbuffer()))
    print(
        f"{args.split}: {len(x_all)} samples, clean accuracy {clean:.2%}, PGD-{args.steps} ({norm}, eps "
        f"{args.eps:g}, {args.restarts} restart(s)) accuracy {robust:.2%}; wrote {args.out}"
    )
    return 0
