"""advfast's autoattack against the reference AutoAttack (fra31/auto-attack, as ``pyautoattack==0.2.0``) on the
first N test images of trained runs: per-point robustness, per-stage accuracy and seconds of both, side by side.

Each side runs in its own process, on one thread, and writes its own JSON (the reference takes many minutes on a
robust model, so the two can run one after the other, or on different days, and be combined later)::

    OMP_NUM_THREADS=1 python benchmarks/agreement_autoattack.py reference /work/runs/eval-pgd --n 1000 \\
        --out /tmp/aa/pgd-reference.json
    OMP_NUM_THREADS=1 python benchmarks/agreement_autoattack.py advfast /work/runs/eval-pgd --n 1000 \\
        --out /tmp/aa/pgd-advfast.json
    python benchmarks/agreement_autoattack.py combine /tmp/aa/*-reference.json /tmp/aa/*-advfast.json \\
        --out benchmarks/results/autoattack-mnist.json

The reference runs its ``standard`` version (APGD-CE, APGD-T, FAB-T, Square); its per-attack accuracies and
times are read from its DEBUG log on the logger "auto-attack". advfast runs ``advfast.eval.autoattack`` (APGD-CE,
APGD-T, Square: the standard version without FAB-T). ``combine`` pairs the files by run and reports, per run,
both robust accuracies, their difference in points, the points on which they disagree, what FAB-T broke in the
reference (the points it took from the accuracy after APGD-T), and the time ratio.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import re
import sys
import time
from pathlib import Path

import torch


def _load(run: str, n: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, dict]:
    from advfast.train import load_classifier

    trained = load_classifier(run)
    test = trained.data().test
    config = trained.config
    about = {"run": run, "method": config.method, "data": config.data, "eps": config.eps, "norm": config.norm}
    return trained.model, test.x[:n], test.y[:n], about


class _StageLog(logging.Handler):
    """Collects the reference's "robust accuracy after ATTACK: xx.xx% (total time t s)" lines."""

    PATTERN = re.compile(r"robust accuracy after (\S+): ([0-9.]+)% \(total time ([0-9.]+) s\)")

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.stages: list[tuple[str, float, float]] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "successfully perturbed" not in message:
            self.lines.append(message)
        match = self.PATTERN.search(message)
        if match:
            self.stages.append((match.group(1).lower(), float(match.group(2)) / 100, float(match.group(3))))


def stage_accuracy_clean(log: _StageLog) -> float | None:
    """The reference's "initial accuracy: xx.xx%" line."""
    for line in log.lines:
        match = re.search(r"initial accuracy: ([0-9.]+)%", line)
        if match:
            return float(match.group(1)) / 100
    return None


def run_reference(args: argparse.Namespace) -> dict:
    from pyautoattack import AutoAttack

    model, x, y, about = _load(args.run, args.n)
    norm = {"linf": "Linf", "l2": "L2"}[about["norm"]]
    log = _StageLog()
    logger = logging.getLogger("auto-attack")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(log)
    aa = AutoAttack(model, norm=norm, eps=about["eps"], version="standard", device="cpu", seed=args.seed)
    started = time.perf_counter()
    _, y_adv = aa.run_standard_evaluation(x, y, batch_size=args.batch_size)
    seconds = time.perf_counter() - started
    robust = (y_adv == y).tolist()
    # The log gives cumulative times; per stage: the difference to the previous stage.
    accuracy, stage_seconds, previous = {}, {}, 0.0
    for name, acc, total in log.stages:
        accuracy[name], stage_seconds[name], previous = acc, total - previous, total
    return about | {
        "side": "reference",
        "implementation": "pyautoattack 0.2.0 (fra31/auto-attack), version standard",
        "n": len(y),
        "clean_accuracy": stage_accuracy_clean(log),
        "robust_accuracy": sum(robust) / len(robust),
        "stage_accuracy": accuracy,
        "stage_seconds": stage_seconds,
        "seconds": seconds,
        "robust": robust,
        "log": log.lines,
    }


def run_advfast(args: argparse.Namespace) -> dict:
    import advfast
    from advfast.eval import autoattack

    model, x, y, about = _load(args.run, args.n)
    started = time.perf_counter()
    result = autoattack(model, x, y, eps=about["eps"], norm=about["norm"], batch_size=args.batch_size, seed=args.seed)
    seconds = time.perf_counter() - started
    robust = result.robust.tolist()
    return about | {
        "side": "advfast",
        "implementation": f"advfast {advfast.__version__} advfast.eval.autoattack, version standard (no FAB-T)",
        "n": len(y),
        "clean_accuracy": result.accuracy["clean"],
        "robust_accuracy": sum(robust) / len(robust),
        "stage_accuracy": {k: v for k, v in result.accuracy.items() if k != "clean"},
        "stage_seconds": result.seconds,
        "seconds": seconds,
        "robust": robust,
    }


def combine(args: argparse.Namespace) -> dict:
    sides: dict[str, dict[str, dict]] = {}
    for path in args.files:
        record = json.loads(Path(path).read_text())
        sides.setdefault(record["run"], {})[record["side"]] = record
    runs = []
    for run, pair in sorted(sides.items()):
        if set(pair) != {"reference", "advfast"}:
            raise SystemExit(f"{run}: need one reference and one advfast file, got {sorted(pair)}")
        ref, ours = pair["reference"], pair["advfast"]
        if ref["n"] != ours["n"]:
            raise SystemExit(f"{run}: the two sides attacked different numbers of points")
        only_ours = sum(a and not b for a, b in zip(ours["robust"], ref["robust"], strict=True))
        only_ref = sum(b and not a for a, b in zip(ours["robust"], ref["robust"], strict=True))
        stages = ref["stage_accuracy"]
        fab = stages.get("fab-t")
        runs.append(
            {
                "run": run,
                "method": ref["method"],
                "eps": ref["eps"],
                "norm": ref["norm"],
                "n": ref["n"],
                "clean_accuracy": ours["clean_accuracy"],
                "reference_robust_accuracy": ref["robust_accuracy"],
                "advfast_robust_accuracy": ours["robust_accuracy"],
                "difference_points": round(100 * (ours["robust_accuracy"] - ref["robust_accuracy"]), 2),
                "robust_only_in_advfast": only_ours,
                "robust_only_in_reference": only_ref,
                "fab_t_broke_points": None if fab is None else round(ref["n"] * (stages["apgd-t"] - fab)),
                "reference_stage_accuracy": stages,
                "advfast_stage_accuracy": ours["stage_accuracy"],
                "reference_stage_seconds": ref["stage_seconds"],
                "advfast_stage_seconds": ours["stage_seconds"],
                "reference_seconds": ref["seconds"],
                "advfast_seconds": ours["seconds"],
                "speedup": ref["seconds"] / ours["seconds"],
            }
        )
    return {
        "what": "advfast.eval.autoattack against the reference AutoAttack (standard), first N MNIST test images",
        "machine": platform.processor() or platform.machine(),
        "threads": 1,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="side", required=True)
    for side in ("reference", "advfast"):
        p = sub.add_parser(side)
        p.add_argument("run")
        p.add_argument("--n", type=int, default=1000)
        p.add_argument("--batch-size", type=int, default=250)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", required=True)
    p = sub.add_parser("combine")
    p.add_argument("files", nargs="+")
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    record = {"reference": run_reference, "advfast": run_advfast, "combine": combine}[args.side](args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    summary = {k: v for k, v in record.items() if k not in ("robust", "log")}
    print(json.dumps(summary, indent=1), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
