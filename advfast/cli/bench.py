"""``advfast bench``: time the fused steps against eager PyTorch and a plain copy on this machine."""

from __future__ import annotations

import argparse

from advfast.cli.common import integer

NAME = "bench"
HELP = "time the fused steps against eager PyTorch and a plain copy on this machine"
EXAMPLES = """\
  advfast bench                      # the fused steps vs eager PyTorch and a copy, 16M elements
  advfast bench --elements 64M --device cuda"""

SCALES = {"k": 2**10, "m": 2**20, "g": 2**30}


def elements(text: str) -> int:
    """``16M`` -> 16 * 2**20; a plain integer as it is; at least 3072 (one 3x32x32 image)."""
    number, scale = text, 1
    if text and text[-1].lower() in SCALES:
        number, scale = text[:-1], SCALES[text[-1].lower()]
    try:
        value = int(float(number) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count such as 1M, 16M or 1048576, got {text!r}") from None
    if value < 3072:
        raise argparse.ArgumentTypeError(f"must be at least 3072 (one 3x32x32 image), got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--elements", type=elements, default=16 * 2**20, help="tensor size: 1M, 16M... (default: 16M)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--repeats", type=integer(1), default=20, help="timed repeats, median reported (default: 20)")


def run(args: argparse.Namespace) -> int:
    from advfast import has_cuda_kernels
    from advfast.bench import run_bench
    from advfast.cli.common import CommandError
    from advfast.runtime import resolve_device

    device = resolve_device(args.device)
    if device.type == "cuda" and not has_cuda_kernels():
        raise CommandError("--device cuda: this advfast was built without CUDA kernels (a CPU torch, or no nvcc)")
    print(run_bench(args.elements, str(device), args.repeats))
    return 0
