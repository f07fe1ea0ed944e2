"""Turn the pytest-benchmark JSON of ``bench_step.py`` into the README's tables, a CSV and a target check.

    python benchmarks/report.py benchmarks/results/step-cpu.json [benchmarks/results/step-cuda.json ...]

Prints one Markdown table per (device, norm, sample shape): a row per size with the median time of each
variant, the GB/s of the fused op and of the copy floor (bytes the step must move / median time; 1 GB = 1e9
bytes), and the ratios measured in the same run: the fused op's speed-up over the eager out-of-place chain, the
eager in-place chain and torch.compile, and its time over the floor's. Then one line per target (met or not,
with the figures per size). CUDA results are the device's time per call (``device_median_s``: CUDA graph
replays timed with CUDA events) where the JSON has it, else pytest-benchmark's wall clock per call. Writes
``<json stem>.csv`` next to each JSON (device, torch version, date, norm, sample, size, variant, median seconds,
GB/s). ``--strict`` exits with status 1 when a measured target is not met.
Results of ``bench_pgd.py`` in the same files get a table of their own (attack times, no CSV).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

VARIANTS = ("advfast", "eager_out_of_place", "eager_in_place", "compiled", "copy_floor")
VARIANT_TITLES = {
    "advfast": "advfast",
    "eager_out_of_place": "eager out-of-place",
    "eager_in_place": "eager in-place",
    "compiled": "torch.compile",
    "copy_floor": "copy floor",
}
NORM_TITLES = {"linf": "L∞", "l2": "L2", "apgd-linf": "APGD L∞", "apgd-l2": "APGD L2"}
DEFAULT_SAMPLE = "3x32x32"  # results written before bench_step recorded its sample shape
CSV_FIELDS = (
    "device",
    "device_name",
    "torch_version",
    "threads",
    "date",
    "norm",
    "sample",
    "size",
    "elements",
    "variant",
    "median_s",
    "GBps",
)


@dataclass(frozen=True)
class Result:
    """One variant at one size: the median seconds of one call and the GB/s it implies."""

    device: str
    device_name: str
    torch_version: str
    threads: int
    date: str
    norm: str
    sample: str
    size: str
    elements: int
    variant: str
    median_s: float
    GBps: float


@dataclass(frozen=True)
class Target:
    """A performance target of one device and norm (and sample shape, when given), judged per size from
    ``min_elements`` up on a ratio of two variants' median times: ``time(num) / time(den)`` must be at least
    ``low`` (or at most ``high``)."""

    device: str
    norm: str
    text: str
    num: str
    den: str
    low: float | None = None
    high: float | None = None
    percent: bool = False  # show the ratio as a percentage (a fraction of the floor's GB/s)
    sample: str | None = None
    min_elements: int = 0

    def applies(self, device: str, norm: str, sample: str) -> bool:
        return device == self.device and norm == self.norm and self.sample in (None, sample)

    def figure(self, variants: dict[str, Result]) -> float | None:
        if self.num not in variants or self.den not in variants:
            return None
        return variants[self.num].median_s / variants[self.den].median_s

    def met(self, figure: float) -> bool:
        return (self.low is None or figure >= self.low) and (self.high is None or figure <= self.high)

    def show(self, figure: float) -> str:
        return f"{figure:.0%}" if self.percent else f"{figure:.2f}x"


# The issues' targets. "faster than compile" = compile's time / advfast's > 1; "85% of the copy's GB/s" (the
# same bytes) = the copy's time / advfast's >= 0.85. CUDA L2: on chip for CIFAR samples; ImageNet's (bench_step.py
# with ADVFAST_BENCH_SAMPLE=3x224x224) exceed a block's shared memory and take a cluster (sm_90+) or chunks.
FASTER = 1.0 + 1e-9
TARGETS = (
    Target("cpu", "linf", "advfast faster than torch.compile", "compiled", "advfast", low=FASTER),
    Target("cpu", "linf", "advfast time <= 1.5x the copy floor's", "advfast", "copy_floor", high=1.5),
    Target(
        "cuda",
        "linf",
        "advfast >= 85% of the copy's GB/s from 4M elements",
        "copy_floor",
        "advfast",
        low=0.85,
        percent=True,
        min_elements=2**22,
    ),
    Target(
        "cuda",
        "l2",
        "advfast on chip >= 75% of the copy's GB/s",
        "copy_floor",
        "advfast",
        low=0.75,
        percent=True,
        sample="3x32x32",
    ),
    Target(
        "cuda",
        "l2",
        "advfast beyond a block's shared memory (a cluster on sm_90+, else chunked) >= 60% of the copy's GB/s",
        "copy_floor",
        "advfast",
        low=0.6,
        percent=True,
        sample="3x224x224",
    ),
    Target("cuda", "linf", "advfast faster than torch.compile", "compiled", "advfast", low=FASTER),
    Target("cuda", "l2", "advfast faster than torch.compile", "compiled", "advfast", low=FASTER),
)


def load(path: Path) -> list[Result]:
    """The bench_step results of one pytest-benchmark JSON file (other benchmarks in it are skipped)."""
    data = json.loads(path.read_text())
    date = str(data.get("datetime", ""))[:10]
    results = []
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if not {"norm", "variant", "bytes_moved", "size"} <= info.keys():
            continue
        # The device's time per call where measured (CUDA); else pedantic(iterations=1) stats are per round, and
        # a round runs calls_per_round calls.
        if "device_median_s" in info:
            median_s = float(info["device_median_s"])
        else:
            median_s = float(bench["stats"]["median"]) / int(info.get("calls_per_round", 1))
        results.append(
            Result(
                device=str(info.get("device", "cpu")),
                device_name=str(info.get("device_name", "")),
                torch_version=str(info.get("torch_version", "")),
                threads=int(info.get("threads", 0)),
                date=date,
                norm=str(info["norm"]),
                sample=str(info.get("sample", DEFAULT_SAMPLE)),
                size=str(info["size"]),
                elements=int(info["elements"]),
                variant=str(info["variant"]),
                median_s=median_s,
                GBps=float(info["bytes_moved"]) / median_s / 1e9,
            )
        )
    return results


def write_csv(results: Sequence[Result], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for r in results:
            row = asdict(r)
            row["median_s"] = f"{r.median_s:.6e}"
            row["GBps"] = f"{r.GBps:.2f}"
            writer.writerow(row)


TableKey = tuple[str, str, str, str]  # device, device name, norm, sample shape


def by_table(results: Iterable[Result]) -> dict[TableKey, dict[str, dict[str, Result]]]:
    """(device, device name, norm, sample) -> size -> variant -> result; a later file's result replaces an
    earlier."""
    tables: dict[TableKey, dict[str, dict[str, Result]]] = {}
    for r in results:
        sizes = tables.setdefault((r.device, r.device_name, r.norm, r.sample), {})
        variants = sizes.setdefault(r.size, {})
        if r.variant in variants:
            print(
                f"note: {r.device} {r.norm} {r.sample} {r.size} {r.variant} measured twice, keeping the later",
                file=sys.stderr,
            )
        variants[r.variant] = r
    return tables


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}"


def _speedup(variants: dict[str, Result], other: str) -> str:
    if "advfast" not in variants or other not in variants:
        return "—"
    return f"{variants[other].median_s / variants['advfast'].median_s:.2f}x"


def markdown_table(key: TableKey, sizes: dict[str, dict[str, Result]]) -> str:
    """The Markdown table of one (device, device name, norm, sample), rows in size order."""
    device, name, norm, sample = key
    any_result = next(r for variants in sizes.values() for r in variants.values())
    samples = "" if sample == DEFAULT_SAMPLE else f", samples {sample}"
    lines = [
        f"#### {NORM_TITLES.get(norm, norm)} step{samples}, {device} ({name}), torch {any_result.torch_version}, "
        f"{any_result.threads} threads, {any_result.date}",
        "",
        "| size | " + " | ".join(f"{VARIANT_TITLES[v]} (ms)" for v in VARIANTS) + " | advfast GB/s | floor GB/s "
        "| speed-up vs eager out-of-place | vs eager in-place | vs torch.compile | advfast / floor time |",
        "|---" + "|--:" * (len(VARIANTS) + 6) + "|",
    ]
    for size, variants in sorted(sizes.items(), key=lambda item: next(iter(item[1].values())).elements):
        times = [_ms(variants[v].median_s) if v in variants else "—" for v in VARIANTS]
        gbps = [f"{variants[v].GBps:.1f}" if v in variants else "—" for v in ("advfast", "copy_floor")]
        floor_ratio = "—"
        if "advfast" in variants and "copy_floor" in variants:
            floor_ratio = f"{variants['advfast'].median_s / variants['copy_floor'].median_s:.2f}"
        ratios = [_speedup(variants, v) for v in ("eager_out_of_place", "eager_in_place", "compiled")]
        lines.append("| " + " | ".join([size, *times, *gbps, *ratios, floor_ratio]) + " |")
    return "\n".join(lines)


def check_targets(tables: dict[TableKey, dict[str, dict[str, Result]]]) -> tuple[list[str], bool]:
    """One line per target and measured device and sample shape (figures per size from the target's smallest;
    met only if met at every such size), and whether all measured targets are met."""
    lines, all_met = [], True
    for target in TARGETS:
        for (device, name, norm, sample), sizes in tables.items():
            if not target.applies(device, norm, sample):
                continue
            ordered = sorted(sizes.items(), key=lambda item: next(iter(item[1].values())).elements)
            ordered = [(size, v) for size, v in ordered if next(iter(v.values())).elements >= target.min_elements]
            figures = [(size, target.figure(variants)) for size, variants in ordered]
            measured = [(size, f) for size, f in figures if f is not None]
            if not measured:
                lines.append(f"- [not measured] {device} {NORM_TITLES[norm]}: {target.text}")
                continue
            failed = [size for size, f in measured if not target.met(f)]
            all_met &= not failed
            status = "MET" if not failed else "NOT MET"
            per_size = ", ".join(f"{size} {target.show(f)}" for size, f in measured)
            at = f" (not at {', '.join(failed)})" if failed else ""
            shape = "" if sample == DEFAULT_SAMPLE else f" ({sample} samples)"
            lines.append(f"- [{status}] {device} ({name}) {NORM_TITLES[norm]}{shape}: {target.text}: {per_size}{at}")
    return lines, all_met


def pgd_tables(paths: Sequence[Path]) -> list[str]:
    """Markdown tables of bench_pgd results per (device, device name): each variant's median attack time,
    advfast's speed-up over it, and its time above ``model_only`` (the forward and backward passes alone)."""
    found: dict[tuple[str, str], dict[str, tuple[float, dict]]] = {}
    for path in paths:
        for bench in json.loads(path.read_text()).get("benchmarks", []):
            info = bench.get("extra_info", {})
            if info.get("attack") == "pgd":
                key = (str(info.get("device", "cpu")), str(info.get("device_name", "")))
                median = float(info.get("device_median_s", bench["stats"]["median"]))  # CUDA: events
                found.setdefault(key, {})[info["variant"]] = (median, info)
    tables = []
    for (device, name), variants in sorted(found.items()):
        info = next(iter(variants.values()))[1]
        base = variants.get("model_only", (None, None))[0]
        adv = variants.get("advfast", (None, None))[0]
        lines = [
            f"#### PGD-{info['steps']} (L∞), {info['model']}, batch {info['batch']}, {device} ({name}), "
            f"torch {info['torch_version']}, {info['threads']} threads",
            "",
            "| variant | median (ms) | advfast speed-up | above model_only (ms) | same result from x |",
            "|---|--:|--:|--:|---|",
        ]
        for variant in ("advfast", "eager_loop", "torchattacks", "model_only"):
            if variant not in variants:
                continue
            t = variants[variant][0]
            speedup = f"{t / adv:.2f}x" if adv else "—"
            above = f"{(t - base) * 1e3:.1f}" if base is not None and variant != "model_only" else "—"
            v_info = variants[variant][1]
            same = "—"
            if "bit_exact" in v_info:
                differ = "bit-exact" if v_info["bit_exact"] else f"{v_info['mismatch_fraction']:.3%} differ"
                same = f"{differ} vs {v_info['checked_against']}"
            lines.append(f"| {variant} | {_ms(t)} | {speedup} | {above} | {same} |")
        tables.append("\n".join(lines))
    return tables


def train_tables(paths: Sequence[Path]) -> list[str]:
    """Markdown tables of bench_train results: each method's median seconds per training batch and its multiple
    of standard training's."""
    found: dict[tuple[str, str], dict[str, tuple[float, dict]]] = {}
    for path in paths:
        for bench in json.loads(path.read_text()).get("benchmarks", []):
            info = bench.get("extra_info", {})
            if info.get("kind") == "train":
                key = (str(info.get("device", "cpu")), str(info.get("device_name", "")))
                found.setdefault(key, {})[info["method"]] = (float(bench["stats"]["median"]), info)
    tables = []
    for (device, name), methods in sorted(found.items()):
        info = next(iter(methods.values()))[1]
        standard = methods.get("standard", (None, None))[0]
        lines = [
            f"#### One training batch ({info['batch']} MNIST images, mnist-cnn, eps {info['eps']}), {device} ({name}), "
            f"torch {info['torch_version']}, {info['threads']} threads",
            "",
            "| method | median (ms) | x standard |",
            "|---|--:|--:|",
        ]
        for method, (t, _) in methods.items():
            multiple = f"{t / standard:.1f}" if standard else "—"
            lines.append(f"| {method} | {_ms(t)} | {multiple} |")
        tables.append("\n".join(lines))
    return tables


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="+", type=Path, help="pytest-benchmark JSON files (--benchmark-json)")
    parser.add_argument("--no-csv", action="store_true", help="do not write <json stem>.csv beside each JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a measured target is not met")
    args = parser.parse_args(argv)

    results: list[Result] = []
    for path in args.json:
        loaded = load(path)
        results.extend(loaded)
        if loaded and not args.no_csv:
            write_csv(loaded, path.with_suffix(".csv"))
    tables = by_table(results)
    for key in sorted(tables, key=lambda k: (k[0], k[1], k[3], k[2] != "linf", k[2])):
        print(markdown_table(key, tables[key]))
        print()
    for table in [*pgd_tables(args.json), *train_tables(args.json)]:
        print(table)
        print()
    lines, all_met = check_targets(tables)
    print("Targets:")
    print("\n".join(lines) if lines else "- none measured")
    return 1 if args.strict and not all_met else 0


if __name__ == "__main__":
    sys.exit(main())
