"""Train a small CNN on scikit-learn's digits, attack it, print clean vs robust accuracy.

python -m advfast.demo [--epochs 30] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor, nn

import advfast
from advfast.data import load_digits
from advfast.models import digits_cnn


def train_classifier(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
) -> nn.Module:
    """Standard (non-adversarial) training with Adam and a cosine schedule; returns the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batches = (len(x) + batch_size - 1) // batch_size
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * batches)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Top-1 accuracy of model on (x, y)."""
    return (model(x).argmax(dim=1) == y).float().mean().item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = load_digits(seed=args.seed)
    start = time.perf_counter()
    model = train_classifier(digits_cnn(), x_train, y_train, epochs=args.epochs, seed=args.seed)
    print(f"trained a digits CNN on {len(x_train)} images in {time.perf_counter() - start:.1f} s")
    print(f"build: {advfast.build_info()}")
    print(f"{'attack':<34} {'eps':>5} {'accuracy':>9} {'time':>8}")
    print(f"{'clean':<34} {'-':>5} {accuracy(model, x_test, y_test):>9.1%} {'':>8}")
    generator = torch.Generator().manual_seed(args.seed)
    attacks = {
        "FGSM": lambda eps: advfast.fgsm(model, x_test, y_test, eps=eps),
        "PGD-10 (L-inf)": lambda eps: advfast.pgd(model, x_test, y_test, eps=eps, steps=10, generator=generator),
        "PGD-40, 3 restarts, early stop": lambda eps: advfast.pgd(
            model, x_test, y_test, eps=eps, steps=40, restarts=3, early_stop=True, generator=generator
        ),
    }
    for eps in (0.05, 0.1, 0.2):
        for name, run in attacks.items():
            start = time.perf_counter()
            x_adv = run(eps)
            elapsed = time.perf_counter() - start
            print(f"{name:<34} {eps:>5.2f} {accuracy(model, x_adv, y_test):>9.1%} {elapsed:>7.2f}s")
    x_adv = advfast.pgd(model, x_test, y_test, eps=1.0, norm="l2", steps=20, generator=generator)
    print(f"{'PGD-20 (L2)':<34} {1.0:>5.2f} {accuracy(model, x_adv, y_test):>9.1%}")


if __name__ == "__main__":
    main()
