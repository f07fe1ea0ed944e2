"""The README's MNIST AutoAttack table, measured in one run: each row's model trained by its README command,
then evaluated on the test split with AutoAttack (APGD-CE, APGD-T, Square) and PGD-40, beside the published
AutoAttack figure for its recipe.

    python benchmarks/mnist_table.py OUT [--rows NAME ...] [--jobs N] [--device cuda] [--limit N]

Rows run ``--jobs`` at a time, each in its own processes (``advfast train``, then ``advfast eval``), with its
logs in OUT/logs. OUT/table.md and OUT/results.json are rewritten after every row, so a run stopped early
keeps what it finished; run the same command again to go on (finished trainings are resumed, which does
nothing more, and evaluations continue from their progress files). On this 2-core CPU the full test split
costs about 3 hours of AutoAttack per robust model; the script is sized for a GPU, where the trainings are the
larger part. ``--limit`` (the first N test images) and ``--max-steps`` (optimizer steps per training) make a
quick trial of the pipeline, never a README figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from advfast.eval import published_for

# The README's base command for every MNIST row, then each row's own arguments.
BASE = ["--data", "mnist", "--eps", "0.3", "--eval-eps", "0.1", "0.2", "0.3", "--eval-steps", "40", "--no-report"]
WONG = ["--epochs", "10", "--batch-size", "100", "--lr", "5e-3", "--schedule", "one-cycle", "--eps-warmup", "0"]


@dataclass(frozen=True)
class Row:
    method: str
    args: list[str]

    @property
    def anchor(self) -> dict | None:
        """The published figures for the method (advfast.eval's anchors, which the reports print too)."""
        return published_for("mnist", self.method, 0.3, "linf")


ROWS: dict[str, Row] = {
    "standard": Row("standard", ["--epochs", "10"]),
    "pgd": Row("pgd", ["--epochs", "20", "--steps", "10", "--eps-warmup", "0.3"]),
    "fgsm-rs-s0": Row("fgsm-rs", [*WONG, "--seed", "0"]),
    "fgsm-rs-s1": Row("fgsm-rs", [*WONG, "--seed", "1"]),
    "fgsm-rs-s2": Row("fgsm-rs", [*WONG, "--seed", "2"]),
    "free": Row("free", ["--replays", "8", "--epochs", "3"]),
    "trades": Row("trades", ["--epochs", "10", "--steps", "10", "--beta", "6"]),
    # Zhang et al. trained for 100 epochs; the 10-epoch row stays 4 points under its anchor.
    "trades-40": Row("trades", ["--epochs", "40", "--steps", "10", "--beta", "6"]),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("out", type=Path, help="folder for the runs, logs, table.md and results.json")
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=list(ROWS), help="rows to measure")
    parser.add_argument("--jobs", type=int, default=1, help="rows measured at once (default 1)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: advfast's, cuda if available)")
    parser.add_argument("--limit", type=int, default=0, help="the first N test images only (0: all 10,000)")
    parser.add_argument("--max-steps", type=int, default=0, help="stop each training after N steps (a trial)")
    parser.add_argument("--eval-batch-size", type=int, help="evaluation batch size (default: advfast eval's)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.limit < 0 or args.max_steps < 0:
        parser.error("--limit and --max-steps must be >= 0")
    return args


def advfast(*args: str) -> list[str]:
    return [sys.executable, "-m", "advfast.cli", *args]


def commands(name: str, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The training and evaluation commands of row ``name``."""
    run = args.out / "runs" / name
    common = [] if args.device is None else ["--device", args.device]
    if (run / "last.pt").exists():
        train = advfast("train", "--resume", str(run), "--no-progress", *common)
    else:
        row = ROWS[name]
        train = advfast("train", *BASE, "--method", row.method, *row.args, "--no-progress", "--out", str(run), *common)
    if args.max_steps:
        train += ["--max-steps", str(args.max_steps)]
    evaluate = advfast("eval", str(run), "--eps", "0.3", "--attack", "autoattack", "pgd", "--steps", "40",
                       "--no-sanity", "--no-progress", "--out", str(run / "aa"), *common)  # fmt: skip
    if args.limit:
        evaluate += ["--limit", str(args.limit)]
    if args.eval_batch_size:
        evaluate += ["--batch-size", str(args.eval_batch_size)]
    return train, evaluate


def measure(name: str, args: argparse.Namespace) -> dict:
    """Trains and evaluates one row; its numbers (percentages) and seconds."""
    logs = args.out / "logs"
    row, anchor = ROWS[name], ROWS[name].anchor
    published = None if anchor is None else {"source": anchor["source"], "autoattack": 100 * anchor["autoattack"][0.3]}
    record: dict = {"row": name, "method": row.method, "args": row.args, "published": published}
    for part, command in zip(("train", "eval"), commands(name, args), strict=True):
        began = time.perf_counter()
        with open(logs / f"{name}-{part}.log", "w") as log:
            status = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
        record[f"{part}_seconds"] = round(time.perf_counter() - began, 1)
        record[f"{part}_command"] = "advfast " + " ".join(command[3:])
        if status != 0:
            record["error"] = f"{part} exited with {status} (see logs/{name}-{part}.log)"
            return record
    result = json.loads((args.out / "runs" / name / "aa" / "report.json").read_text())["result"]
    stages = result["stages"]["autoattack"]["accuracy"][0]
    record.update(
        points=result["num_samples"],
        clean=100 * result["clean_accuracy"],
        pgd40=100 * result["accuracy"]["pgd"][0],
        stages={stage: 100 * value for stage, value in stages.items()},
        autoattack=100 * result["accuracy"]["autoattack"][0],
    )
    return record


def table(records: list[dict], device: str) -> str:
    lines = [
        f"MNIST, eps 0.3 (L-inf), device: {device}. AutoAttack = APGD-CE, APGD-T, Square on the points still",
        "robust (advfast's `autoattack`); PGD-40 is the weaker attack.",
        "",
        "| row | points | clean | PGD-40 | after APGD-CE | after APGD-T | AutoAttack | published AutoAttack "
        "(sources: results.json) | train s | eval s |",
        "|---|--:|--:|--:|--:|--:|--:|---|--:|--:|",
    ]  # fmt: skip
    for r in records:
        anchor = f"{r['published']['autoattack']:.2f}" if r["published"] else ""
        if "error" in r:
            lines.append(f"| {r['row']} | | | | | | {r['error']} | {anchor} | | |")
            continue
        s = r["stages"]
        lines.append(
            f"| {r['row']} | {r['points']:,} | {r['clean']:.1f} | {r['pgd40']:.1f} | {s['apgd-ce']:.1f} | "
            f"{s['apgd-t']:.1f} | **{r['autoattack']:.1f}** | {anchor} | {r['train_seconds']:.0f} | "
            f"{r['eval_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def device_name(device: str | None) -> str:
    import torch

    if (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU ({torch.get_num_threads()} threads), torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    device = device_name(args.device)
    records: dict[str, dict] = {}
    lock = threading.Lock()

    def one(name: str) -> None:
        record = measure(name, args)
        with lock:
            records[name] = record
            done = [records[n] for n in args.rows if n in records]
            (args.out / "results.json").write_text(json.dumps({"device": device, "rows": done}, indent=2))
            (args.out / "table.md").write_text(table(done, device))
            said = record["error"] if "error" in record else f"AutoAttack {record['autoattack']:.1f}%"
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {said}", flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, args.rows))
    print(table([records[n] for n in args.rows], device))
    return 1 if any("error" in r for r in records.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
