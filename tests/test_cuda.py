"""CUDA kernels against advfast.reference with the CPU suite's tolerances: every kernel path (one-pass packs with
scalar heads and tails, straddling packs, second grid-stride passes; L2 on chip with sub-warp, warp and block
groups and several samples per block, in a thread-block cluster per sample on sm_90+, and chunked with several
chunks per sample), both sides of the on-chip and cluster limits of the device at hand, per-sample
eps/alpha/mask, layouts, misaligned views, odd sizes, aliasing, bounds, extreme gradients, side streams,
opcheck, torch.compile, CUDA graphs, and a tensor of more than 2^31 elements. Skipped unless this build has CUDA
kernels and a GPU is present (nothing here touches the GPU at import time). benchmarks/gpu_check also runs the
large-sample tests with ADVFAST_CUDA_CLUSTERS=0, so that sm_90 covers the chunked path at those sizes too."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import (
    DTYPES,
    LAYOUTS,
    OPS,
    assert_in_ball,
    cuda_available,
    cuda_l2_plan,
    describe_mismatch,
    exact_or_one_ulp,
    in_layout,
    run_op,
    within_norm_rounding,
)

import advfast
from advfast import ops, reference

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not cuda_available(), reason="needs a CUDA build of advfast and a GPU"),
]

BOUNDS = ((0.0, 1.0), (-1.0, 2.0), (0.2, 0.7), (-math.inf, math.inf))
# The L2-family ops under the names _cuda_l2_plan knows.
PLAN_NAMES = {"l2_step_": "l2_step", "random_start_l2": "random_start_l2", "apgd_l2": "apgd_l2"}

# (shape, why): sizes that hit each kernel path on any current GPU (the on-chip limit itself is tested on the
# device's own boundary below).
SHAPES = [
    ((64, 3, 32, 32), "CIFAR: L2 on chip, block groups"),
    ((5, 1, 28, 28), "MNIST: L2 on chip, 64-thread groups"),
    ((37, 8, 48), "384-element tokens: warp groups, several samples per block"),
    ((9, 2, 3, 5), "30-element samples: 8-thread groups, straddling packs"),
    ((3, 3, 128, 128), "3x128x128: L2 in a cluster (sm_90+) or chunked"),
    ((2, 3, 448, 448), "3x448x448: L2 chunked, several chunks per sample"),
    ((2, 3, 7, 5), "odd sizes: heads and tails of every sample"),
    ((3, 3, 299, 299), "3x299x299: odd, a 15-block cluster or chunked"),
    ((1, 1), "one element"),
    ((0, 3, 4, 4), "empty batch"),
]
SHAPE_IDS = [why for _, why in SHAPES]
# One shape per L2 path for the tests that run every dtype: on chip; a cluster on sm_90+ (chunked before, on
# chip for the 16-bit random start); chunked on every device (past 16 blocks' shared memory even in float16).
PATH_SHAPES = [(6, 3, 20, 20), (3, 3, 128, 128), (3, 3, 600, 600)]
PATH_IDS = ["on chip", "cluster", "chunked"]


def make(shape, dtype, layout="contiguous", seed=0, lo=0.0, hi=1.0):
    """(x_adv, grad, x) on the GPU: x in [lo, hi] (clipped to [-2, 2]), x_adv near x (partly outside the ball and
    the bounds), grad standard normal with NaN, +-inf, signed zeros, a denormal and a huge value up front."""
    gen = torch.Generator().manual_seed(seed)
    span_lo, span_hi = max(lo, -2.0), min(hi, 2.0)
    x = span_lo + (span_hi - span_lo) * torch.rand(shape, generator=gen, dtype=torch.float64)
    x_adv = x + 0.2 * (torch.rand(shape, generator=gen, dtype=torch.float64) - 0.5)
    grad = torch.randn(shape, generator=gen, dtype=torch.float64)
    if grad.numel() > 10:
        grad.view(-1)[:7] = torch.tensor([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-40, -1e30], dtype=torch.float64)
    return [in_layout(t.to(dtype).cuda(), layout) for t in (x_adv, grad, x)]


def per_sample(batch: int, low: float, high: float, seed: int = 0) -> torch.Tensor:
    """Distinct values in [low, high] per sample (the first sample gets high, never 0)."""
    gen = torch.Generator().manual_seed(seed)
    values = low + (high - low) * torch.rand(batch, generator=gen)
    if batch:
        values[0] = high
    return values.cuda()


def some_mask(batch: int) -> torch.Tensor:
    """True for most samples, False for every third (sample 1 and 4 ... stay)."""
    return (torch.arange(batch, device="cuda") % 3) != 1


def _free_gpu_bytes() -> int:
    free, _ = torch.cuda.mem_get_info()
    return free


def assert_masked_unchanged(after: torch.Tensor, before: torch.Tensor, mask: torch.Tensor | None) -> None:
    if mask is not None and (~mask).any():
        assert torch.equal(after[~mask], before[~mask]), "a masked-out sample must stay bit for bit"


def step_arguments(shape, norm):
    """The (eps, alpha, mask) variants every step test runs: scalars; per-sample eps; per-sample alpha with a
    mask; both per sample (float64 tensors for the float32 math: the op converts them)."""
    b = shape[0]
    eps0, alpha0 = (8 / 255, 2 / 255) if norm == "linf" else (0.5, 0.2)
    return [
        (eps0, alpha0, None),
        (per_sample(b, 0.01, 2 * eps0, 1), alpha0, None),
        (eps0, per_sample(b, 0.0, 2 * alpha0, 2), some_mask(b)),
        (per_sample(b, 0.01, 2 * eps0, 3).double(), per_sample(b, 0.0, 3 * alpha0, 4).double(), some_mask(b)),
    ]


# ---- the ops against the reference ----------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "why"), SHAPES, ids=SHAPE_IDS)
def test_linf_step_matches_reference(shape, why, dtype, layout) -> None:
    x_adv, grad, x = make(shape, dtype, layout)
    for eps, alpha, mask in step_arguments(shape, "linf"):
        a = x_adv.clone()
        expected = reference.linf_step(a, grad, x, eps, alpha, mask=mask)
        ops.linf_step_(a, grad, x, eps, alpha, mask=mask)
        exact_or_one_ulp(a, expected)
        assert_masked_unchanged(a, x_adv, mask)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "why"), SHAPES, ids=SHAPE_IDS)
def test_l2_step_matches_reference(shape, why, dtype, layout) -> None:
    x_adv, grad, x = make(shape, dtype, layout)
    for eps, alpha, mask in step_arguments(shape, "l2"):
        a = x_adv.clone()
        expected = reference.l2_step(a, grad, x, eps, alpha, mask=mask)
        ops.l2_step_(a, grad, x, eps, alpha, mask=mask)
        within_norm_rounding(a, expected)
        assert_masked_unchanged(a, x_adv, mask)
        moved = torch.ones(shape[0], dtype=torch.bool, device="cuda") if mask is None else mask
        eps_moved = eps[moved] if isinstance(eps, torch.Tensor) else eps
        assert_in_ball(a[moved], x[moved], eps_moved, "l2", 0.0, 1.0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "why"), SHAPES, ids=SHAPE_IDS)
def test_random_start_matches_reference(shape, why, dtype, norm) -> None:
    x = make(shape, dtype)[2]
    for eps in (0.1, per_sample(shape[0], 0.0, 0.5)):
        x_adv = torch.empty_like(x)
        ops.random_start_(x_adv, x, eps, norm, generator=torch.Generator("cuda").manual_seed(3))
        expected = reference.random_start(x_adv, x, eps, norm, generator=torch.Generator("cuda").manual_seed(3))
        (exact_or_one_ulp if norm == "linf" else within_norm_rounding)(x_adv, expected)
        assert_in_ball(x_adv, x, eps, norm, 0.0, 1.0)


@pytest.mark.parametrize("momentum", [1.0, 0.75])
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "why"), SHAPES, ids=SHAPE_IDS)
def test_apgd_step_matches_reference(shape, why, dtype, layout, norm, momentum) -> None:
    x_adv, grad, x = make(shape, dtype, layout)
    x_prev = make(shape, dtype, layout, seed=1)[0]
    for eps, eta, mask in step_arguments(shape, norm):
        a, p = x_adv.clone(), x_prev.clone()
        expected_adv, expected_prev = reference.apgd_step(a, p, grad, x, eps, eta, momentum, norm=norm, mask=mask)
        ops.apgd_step_(a, p, grad, x, eps, eta, momentum, norm=norm, mask=mask)
        (exact_or_one_ulp if norm == "linf" else within_norm_rounding)(a, expected_adv)
        assert torch.equal(p, expected_prev), "x_prev must become the old x_adv (masked samples: stay)"
        assert_masked_unchanged(a, x_adv, mask)


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("bounds", BOUNDS, ids=str)
@pytest.mark.parametrize("shape", PATH_SHAPES, ids=PATH_IDS)
def test_bounds_other_than_unit(name, bounds, shape) -> None:
    lo, hi = bounds
    x_adv, grad, x = make(shape, torch.float32, lo=lo, hi=hi, seed=5)
    eps = per_sample(shape[0], 0.05, 0.6)
    expected = run_op(name, x_adv, grad, x, eps, 0.1, lo, hi, mask=some_mask(shape[0]), reference_too=True)
    check = exact_or_one_ulp if "linf" in name else within_norm_rounding
    check(x_adv, expected)
    assert torch.isfinite(x_adv).all()


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", PATH_SHAPES, ids=PATH_IDS)
def test_denormal_and_huge_gradients(name, dtype, shape) -> None:
    """Gradients of the smallest subnormals (all of a sample), of the largest finite values, and mixed: the
    norms neither flush nor overflow, so every sample still steps as the reference says."""
    info = torch.finfo(dtype)
    x_adv, grad, x = make(shape, dtype, seed=6)
    flat = grad.view(shape[0], -1)
    gen = torch.Generator().manual_seed(7)
    signs = (torch.randint(0, 2, flat.shape, generator=gen) * 2 - 1).to(dtype).cuda()
    flat[0] = signs[0] * info.smallest_normal / 8  # subnormal
    flat[1] = signs[1] * info.max
    flat[2, ::2] = info.max / 3
    flat[2, 1::2] = info.smallest_normal / 4
    expected = run_op(name, x_adv, grad, x, 0.5, 0.1, reference_too=True)
    check = exact_or_one_ulp if "linf" in name else within_norm_rounding
    check(x_adv, expected)
    assert torch.isfinite(x_adv).all()


# ---- kernel paths ---------------------------------------------------------------------------------------


def largest_size_on(op: str, dtype: torch.dtype, paths: tuple[str, ...], batch: int = 3) -> int:
    """The largest per-sample size that the L2-family op runs on one of `paths` on this device (the paths are
    ordered by size: on chip, then a cluster where the device has them, then chunked)."""
    low, high = 1, 1 << 24
    assert cuda_l2_plan(op, dtype, batch, low)["path"] in paths
    assert cuda_l2_plan(op, dtype, batch, high)["path"] not in paths
    while high - low > 1:
        middle = (low + high) // 2
        if cuda_l2_plan(op, dtype, batch, middle)["path"] in paths:
            low = middle
        else:
            high = middle
    return low


def check_sizes_around(name: str, dtype: torch.dtype, limit: int, below: str, above: str) -> None:
    """The largest sample on path `below` (odd sizes: heads and tails) and the next size up (path `above`)
    match the reference."""
    vec = 16 // torch.empty(0, dtype=dtype).element_size()
    for n, path in ((limit, below), (limit + 1, above), (limit - vec, below)):
        plan = cuda_l2_plan(PLAN_NAMES[name], dtype, 3, n)
        assert plan["path"] == path, (n, plan)
        x_adv, grad, x = make((3, n), dtype, seed=n)
        eps = per_sample(3, 0.2, 1.0)
        expected = run_op(name, x_adv, grad, x, eps, per_sample(3, 0.05, 0.5, 1), mask=some_mask(3), reference_too=True)
        within_norm_rounding(x_adv, expected)


def has_clusters() -> bool:
    """Whether this device runs the L2 cluster path (sm_90+), for a sample just past the on-chip limit."""
    n = largest_size_on("l2_step", torch.float32, ("on chip",)) + 1
    return cuda_l2_plan("l2_step", torch.float32, 3, n)["path"] == "cluster"


@pytest.mark.parametrize("name", list(PLAN_NAMES))
@pytest.mark.parametrize("dtype", DTYPES)
def test_l2_family_on_both_sides_of_the_on_chip_limit(name, dtype) -> None:
    """The limit follows the device's shared memory (its whole opt-in carve-out, not 64 KiB)."""
    limit = largest_size_on(PLAN_NAMES[name], dtype, ("on chip",))
    plan = cuda_l2_plan(PLAN_NAMES[name], dtype, 3, limit)
    assert plan["shared_bytes"] > 64 * 1024, plan
    check_sizes_around(name, dtype, limit, "on chip", "cluster" if has_clusters() else "chunked")


@pytest.mark.parametrize("name", list(PLAN_NAMES))
@pytest.mark.parametrize("dtype", DTYPES)
def test_l2_family_on_both_sides_of_the_cluster_limit(name, dtype) -> None:
    if not has_clusters():
        pytest.skip("this device has no thread-block clusters (sm_90+)")
    limit = largest_size_on(PLAN_NAMES[name], dtype, ("on chip", "cluster"))
    plan = cuda_l2_plan(PLAN_NAMES[name], dtype, 3, limit)
    assert plan["cluster_blocks"] >= 8, plan
    check_sizes_around(name, dtype, limit, "cluster", "chunked")


def test_group_widths_follow_the_sample_size() -> None:
    """Per-token sizes get warp and sub-warp groups (several samples per block, no barriers), images a block."""
    widths = {n: cuda_l2_plan("l2_step", torch.float32, 1024, n)["group_threads"] for n in (16, 64, 384, 768, 3072)}
    assert widths[16] == 8 and widths[64] <= 16 and widths[384] <= 32, widths
    assert widths[768] >= 32 and widths[3072] >= 128, widths
    plan = cuda_l2_plan("l2_step", torch.float32, 1024, 384)
    assert plan["block_threads"] // plan["group_threads"] >= 4, plan
    with pytest.raises(RuntimeError, match="op must be"):
        cuda_l2_plan("linf_step", torch.float32, 1, 10)


@pytest.mark.parametrize("name", list(PLAN_NAMES))
@pytest.mark.parametrize("shape", [(3, 3, 224, 224), (2, 3, 448, 448)], ids=["3x224x224", "3x448x448"])
def test_large_samples_in_small_batches_fill_the_device(name, shape) -> None:
    """ImageNet samples take a cluster each (sm_90+) or several chunks; 3x448x448 is chunked everywhere. A
    batch of 2 or 3 still spreads over every SM."""
    plan = cuda_l2_plan(PLAN_NAMES[name], torch.float32, shape[0], math.prod(shape[1:]))
    if shape[-1] == 448:
        assert plan["path"] == "chunked" and plan["chunks"] >= 2, plan
        assert plan["blocks"] >= torch.cuda.get_device_properties().multi_processor_count, plan
    else:
        assert plan["path"] in ("cluster", "chunked"), plan
    x_adv, grad, x = make(shape, torch.float32, seed=8)
    b = shape[0]
    expected = run_op(name, x_adv, grad, x, per_sample(b, 0.5, 3.0), 0.7, mask=some_mask(b), reference_too=True)
    within_norm_rounding(x_adv, expected)


def samples_per_round(plan: dict) -> int:
    """Samples that one round of the grid covers."""
    if plan["path"] == "on chip":
        return plan["blocks"] * (plan["block_threads"] // plan["group_threads"])
    if plan["path"] == "cluster":
        return plan["blocks"] // plan["cluster_blocks"]
    return plan["blocks"] // plan["chunks"]


def round_limited_batch(plan_name: str, n: int) -> tuple[int, dict]:
    """A batch past what one round of the grid covers for samples of n elements: the L2 grids stop at a fixed
    number of waves, so blocks then do a second sample (or chunk)."""
    batch = samples_per_round(cuda_l2_plan(plan_name, torch.float32, 1 << 40, n)) + 1000
    plan = cuda_l2_plan(plan_name, torch.float32, batch, n)
    assert samples_per_round(plan) < batch, plan
    return batch, plan


@pytest.mark.parametrize("name", list(PLAN_NAMES))
@pytest.mark.parametrize("n", [3, 8, 1001])
def test_on_chip_blocks_that_loop_over_several_samples(name, n) -> None:
    batch, plan = round_limited_batch(PLAN_NAMES[name], n)
    assert plan["path"] == "on chip", plan
    x_adv, grad, x = make((batch, n), torch.float32, seed=9)
    expected = run_op(name, x_adv, grad, x, per_sample(batch, 0.1, 1.0), 0.3, mask=some_mask(batch), reference_too=True)
    within_norm_rounding(x_adv, expected)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PLAN_NAMES))
@pytest.mark.parametrize("path", ["cluster", "chunked"])
def test_large_sample_blocks_that_loop_over_several_samples(name, path) -> None:
    """The smallest samples of the path, in a batch past one round of its grid."""
    if path == "cluster" and not has_clusters():
        pytest.skip("this device has no thread-block clusters (sm_90+)")
    smaller = ("on chip",) if path == "cluster" else ("on chip", "cluster")
    n = largest_size_on(PLAN_NAMES[name], torch.float32, smaller) + 1
    batch, plan = round_limited_batch(PLAN_NAMES[name], n)
    assert plan["path"] == path, plan
    if _free_gpu_bytes() < 12 * batch * n * 4:
        pytest.skip(f"needs {12 * batch * n * 4 / 2**30:.1f} GiB of free GPU memory")
    x_adv, grad, x = (torch.rand(batch, n, device="cuda") for _ in range(3))
    expected = run_op(name, x_adv, grad, x, per_sample(batch, 0.1, 1.0), 0.3, mask=some_mask(batch), reference_too=True)
    within_norm_rounding(x_adv, expected)


@pytest.mark.parametrize("name", ["linf_step_", "random_start_linf", "apgd_linf"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_one_pass_ops_over_several_grid_strides(name, dtype) -> None:
    """More packs than resident threads: every thread strides at least three times, with per-sample values
    whose samples (of an odd size) straddle packs."""
    props = torch.cuda.get_device_properties()
    vec = 16 // torch.empty(0, dtype=dtype).element_size()
    resident_elements = props.multi_processor_count * props.max_threads_per_multi_processor * vec
    n = 1001
    batch = 3 * resident_elements // n + 7
    x_adv, grad, x = make((batch, n), dtype, seed=10)
    expected = run_op(
        name,
        x_adv,
        grad,
        x,
        per_sample(batch, 0.0, 0.1),
        per_sample(batch, 0.0, 0.05, 1),
        mask=some_mask(batch),
        reference_too=True,
    )
    exact_or_one_ulp(x_adv, expected)


def storage_view(t: torch.Tensor, offset: int) -> torch.Tensor:
    """t's values in a fresh buffer, starting `offset` elements into it (an odd storage offset breaks 16-byte
    alignment)."""
    buffer = torch.zeros(t.numel() + offset + 8, dtype=t.dtype, device=t.device)
    view = buffer[offset : offset + t.numel()].view(t.shape)
    view.copy_(t)
    return view


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "offsets", [(1, 1, 1, 1), (3, 3, 3, 3), (1, 2, 3, 1)], ids=["common 1", "common 3", "different"]
)
@pytest.mark.parametrize(
    "shape",
    [(5, 3, 11, 7), (4, 3, 16, 16), (2, 3, 97, 101), (1, 3, 557, 601)],
    ids=["odd", "even", "cluster", "chunked"],
)
def test_misaligned_views(name, dtype, offsets, shape) -> None:
    """Views with odd storage offsets (x_adv, grad, x, x_prev): a common offset keeps the packed body with scalar
    heads and tails, different offsets go element by element; both as the reference."""
    x_adv, grad, x = (storage_view(t, o) for t, o in zip(make(shape, dtype, seed=11), offsets, strict=False))
    before = x_adv.clone()
    eps, mask = per_sample(shape[0], 0.05, 0.5), some_mask(shape[0])
    check = exact_or_one_ulp if "linf" in name else within_norm_rounding
    if name.startswith("apgd"):
        norm = name.split("_")[1]
        x_prev = storage_view(make(shape, dtype, seed=12)[0], offsets[3])
        expected, expected_prev = reference.apgd_step(x_adv, x_prev, grad, x, eps, 0.1, 0.75, norm=norm, mask=mask)
        ops.apgd_step_(x_adv, x_prev, grad, x, eps, 0.1, 0.75, norm=norm, mask=mask)
        assert torch.equal(x_prev, expected_prev)
    else:
        expected = run_op(name, x_adv, grad, x, eps, 0.1, mask=mask, reference_too=True)
    check(x_adv, expected)
    if not name.startswith("random_start"):
        assert_masked_unchanged(x_adv, before, mask)


@pytest.mark.parametrize("op", ["linf_step_", "l2_step_"])
@pytest.mark.parametrize("shape", [*PATH_SHAPES, (3, 1001)], ids=[*PATH_IDS, "odd"])
def test_grad_may_be_x_adv_itself(op, shape) -> None:
    x_adv, _, x = make(shape, torch.float32, seed=12)
    eps = per_sample(shape[0], 0.05, 0.5)
    expected = getattr(reference, op[:-1])(x_adv, x_adv, x, eps, 0.1)
    getattr(ops, op)(x_adv, x_adv, x, eps, 0.1)
    (exact_or_one_ulp if op == "linf_step_" else within_norm_rounding)(x_adv, expected)


@pytest.mark.parametrize("name", OPS)
def test_ops_run_on_the_current_stream(name) -> None:
    """Inputs written on a side stream behind a long sleep: an op launched on another stream would read them
    before they are there."""
    x_adv, grad, x = make((8, 3, 64, 64), torch.float32, seed=13)
    expected = run_op(name, x_adv.clone(), grad, x, 0.3, 0.1, reference_too=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        work = torch.empty_like(x_adv)
        torch.cuda._sleep(20_000_000)
        work.copy_(x_adv)
        run_op(name, work, grad, x, 0.3, 0.1)
        result = work.clone()
    torch.cuda.current_stream().wait_stream(side)
    check = exact_or_one_ulp if "linf" in name else within_norm_rounding
    check(result, expected)


# (shape, offsets of x_adv / grad / x from fresh allocations): one of each kernel path and alignment case.
TOUR = [
    ((9, 2, 3, 5), (0, 0, 0)),  # 8-thread groups, straddling packs
    ((37, 8, 48), (1, 1, 1)),  # warp groups, common misalignment: heads and tails
    ((5, 1, 28, 28), (0, 0, 0)),  # 64-thread groups
    ((6, 3, 32, 32), (3, 3, 3)),  # block groups
    ((3, 3, 128, 128), (0, 0, 0)),  # a cluster (sm_90+) or chunked
    ((1, 3, 560, 560), (1, 1, 1)),  # chunked everywhere, common misalignment
    ((3, 3, 61, 67), (1, 2, 3)),  # chunked, element by element
    ((4, 5, 7), (2, 1, 0)),  # on chip, element by element
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_every_kernel_path_once(dtype) -> None:
    """Each op through each kernel path and alignment case once, with per-sample values and a mask, against
    the reference: small enough for compute-sanitizer's memcheck, racecheck and synccheck (benchmarks/gpu_check)."""
    for shape, offsets in TOUR:
        b = shape[0]
        for name in OPS:
            x_adv, grad, x = (storage_view(t, o) for t, o in zip(make(shape, dtype, seed=18), offsets, strict=True))
            expected = run_op(
                name,
                x_adv,
                grad,
                x,
                per_sample(b, 0.05, 0.5),
                per_sample(b, 0.0, 0.2, 1),
                mask=some_mask(b),
                reference_too=True,
            )
            (exact_or_one_ulp if "linf" in name else within_norm_rounding)(x_adv, expected)


# ---- contract edges --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(6, 3, 4), (6, 3, 128, 128), (6, 3, 600, 600)], ids=PATH_IDS)
def test_unusable_per_sample_values_count_as_zero(name, dtype, shape) -> None:
    """+-inf, NaN, negative or out-of-range per-sample entries move nothing on CUDA too (no NaN from
    inf * sign(0)), as in the reference."""
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(shape, generator=gen).to(dtype).cuda()
    start = (x.double() + 0.05 * torch.randn(shape, generator=gen, dtype=torch.float64).cuda()).clamp(0, 1).to(dtype)
    grad = torch.randn(shape, generator=gen).to(dtype).cuda()
    grad.view(shape[0], -1)[:, 0] = 0.0
    bad = torch.tensor([math.inf, -math.inf, math.nan, -1.0, 1e300, 0.2], dtype=torch.float64, device="cuda")
    zeroed = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.2], dtype=torch.float64, device="cuda")
    if dtype == torch.float64:
        bad[4] = zeroed[4] = 0.3
    for which in ("eps", "alpha"):
        if which == "alpha" and name.startswith("random_start"):
            continue
        values = {"eps": 0.1, "alpha": 0.05}
        x_bad, x_zero = start.clone(), start.clone()
        expected = run_op(name, x_bad, grad, x, **{**values, which: bad}, reference_too=True)
        run_op(name, x_zero, grad, x, **{**values, which: zeroed})
        assert torch.isfinite(x_bad).all(), which
        assert torch.equal(x_bad, x_zero), f"{which}: {describe_mismatch(x_bad, x_zero)}"
        (exact_or_one_ulp if "linf" in name else within_norm_rounding)(x_bad, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", PATH_SHAPES, ids=PATH_IDS)
def test_l2_norms_do_not_overflow(dtype, shape) -> None:
    """Huge gradient entries and a huge alpha still step (the per-sample norms cannot overflow)."""
    big = 1e200 if dtype == torch.float64 else 1e20
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(shape, dtype=dtype, device="cuda")
    grad = (torch.randn(shape, generator=gen) * big).to(dtype).cuda()
    grad.view(shape[0], -1)[:, 0] = big
    for alpha in (0.05, 1e300 if dtype == torch.float64 else 1e30):
        for name in ("l2_step_", "apgd_l2"):
            x_adv = x.clone()
            expected = run_op(name, x_adv, grad, x, 1.0, alpha, -10.0, 10.0, reference_too=True)
            moved = (x_adv.double() - x.double()).flatten(1).norm(dim=1)
            assert (moved > 0.5 * min(alpha, 1.0)).all(), f"{name} alpha={alpha:g}: moved only {moved.tolist()}"
            within_norm_rounding(x_adv, expected)


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_results_are_finite_for_huge_radii_and_infinite_bounds(name, dtype) -> None:
    largest = torch.finfo(reference.math_dtype(dtype)).max
    x = (torch.rand(3, 8, device="cuda") * 2 - 1).to(dtype)
    grad = torch.randn(3, 8, device="cuda").to(dtype)
    for eps, alpha in [(largest / 2, largest / 2), (largest, 1.0), (1e30, 1e30)]:
        x_adv = (x.double() + 0.1).to(dtype)
        run_op(name, x_adv, grad, x, eps, alpha, -math.inf, math.inf)
        assert torch.isfinite(x_adv).all(), f"eps={eps:g}"


@pytest.mark.parametrize("name", ["l2_step_", "random_start_l2", "apgd_l2"])
@pytest.mark.parametrize(
    "shape",
    [(2, 3, 600, 600), (4, 3, 128, 128), (4, 3, 32, 32), (64, 384)],
    ids=["chunked", "cluster", "block", "warp"],
)
def test_l2_family_is_deterministic(name, shape) -> None:
    x_adv, grad, x = make(shape, torch.float32, seed=14)
    results = []
    for _ in range(3):
        a = x_adv.clone()
        run_op(name, a, grad, x, 2.0, 0.5)
        results.append(a)
    assert torch.equal(results[0], results[1]) and torch.equal(results[1], results[2])


# ---- torch integration: opcheck, torch.compile, CUDA graphs ----------------------------------------------


def _opcheck_samples() -> list[tuple[str, tuple]]:
    samples = []
    for shape in ((3, 2, 4, 4), (3, 3, 70, 70)):
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(shape, generator=gen).cuda()
        grad = torch.randn(shape, generator=gen).cuda()
        x_prev = (x + 0.01 * torch.randn(shape, generator=gen).cuda()).clamp(0, 1)
        eps_t = torch.tensor([0.0, 0.1, 0.2], device="cuda")
        mask = torch.tensor([True, False, True], device="cuda")
        for name in ("linf_step_", "l2_step_"):
            samples.append((name, (x.clone(), grad, x, 0.1, 0.02, 0.0, 1.0)))
            samples.append((name, (x.clone(), grad, x, 0.0, 0.0, 0.0, 1.0, eps_t, eps_t, mask)))
        for norm in ("linf", "l2"):
            samples.append(("random_start_", (torch.empty_like(x), x, 0.1, norm, 0.0, 1.0)))
            samples.append(("apgd_step_", (x.clone(), x_prev.clone(), grad, x, 0.1, 0.02, 0.75, 0.0, 1.0, norm)))
            samples.append(
                ("apgd_step_", (x.clone(), x_prev.clone(), grad, x, 0.0, 0.0, 1.0, -1.0, 2.0, norm, eps_t, eps_t, mask))
            )
    return samples


def test_opcheck_on_cuda() -> None:
    """Schema, autograd registration, fake kernel and AOT dispatch agree with the CUDA kernels."""
    for name, args in _opcheck_samples():
        test_utils = ("test_schema", "test_autograd_registration", "test_faketensor")
        if name != "random_start_":  # fresh noise on each of opcheck's calls: only the non-numeric checks
            test_utils = (*test_utils, "test_aot_dispatch_dynamic")
        torch.library.opcheck(getattr(torch.ops.advfast, name).default, args, test_utils=test_utils)


def _attack_loop(x_adv, x_prev, x, weight, eps_t, mask):
    """Every op in a loop with an analytic stand-in for the gradient."""
    ops.linf_step_(x_adv, torch.sin(x_adv * weight), x, 0.1, eps_t, mask=mask)
    ops.l2_step_(x_adv, torch.cos(x_adv * weight), x, eps_t, 0.05, mask=mask)
    for i in range(2):
        momentum = 1.0 if i == 0 else 0.75
        ops.apgd_step_(x_adv, x_prev, torch.sin(x_adv * weight), x, 0.1, eps_t, momentum, norm="linf", mask=mask)
        ops.apgd_step_(x_adv, x_prev, torch.cos(x_adv * weight), x, eps_t, 0.2, momentum, norm="l2", mask=mask)
    return x_adv - x_prev


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(4, 3, 6, 6), (3, 3, 100, 100), (2, 3, 400, 400)], ids=PATH_IDS)
def test_ops_inside_torch_compile_fullgraph(shape) -> None:
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=gen).cuda()
    weight = torch.randn(shape[1:], generator=gen).cuda()
    eps_t = per_sample(shape[0], 0.01, 0.3)
    mask = some_mask(shape[0])
    eager = _attack_loop(x.clone(), x.clone(), x, weight, eps_t, mask)
    compiled = torch.compile(_attack_loop, fullgraph=True)(x.clone(), x.clone(), x, weight, eps_t, mask)
    torch.testing.assert_close(compiled, eager, atol=1e-6, rtol=1e-6)  # as on the CPU
    assert eager.abs().max() > 0, "the loop must have moved x_adv"


GRAPH_OPS = ("linf_step_", "l2_step_", "apgd_linf", "apgd_l2")


@pytest.mark.parametrize("name", GRAPH_OPS)
@pytest.mark.parametrize("shape", [*PATH_SHAPES, (40, 384)], ids=[*PATH_IDS, "warp"])
def test_cuda_graph_replays_pick_up_new_values(name, shape) -> None:
    """One capture, several replays: each replay reads the current x_adv, eps, alpha and mask tensors (float64
    eps: the op's conversion is captured too) and matches the reference."""
    b = shape[0]
    x_adv0, grad, x = make(shape, torch.float32, seed=15)
    static_adv, static_prev = x_adv0.clone(), x.clone()
    eps = torch.full((b,), 0.3, dtype=torch.float64, device="cuda")
    alpha = torch.full((b,), 0.05, device="cuda")
    mask = torch.ones(b, dtype=torch.bool, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up off the default stream, as graph capture requires
        run_op(name, static_adv.clone(), grad, x, eps, alpha, mask=mask)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        if name.startswith("apgd"):
            ops.apgd_step_(static_adv, static_prev, grad, x, eps, alpha, 0.75, norm=name.split("_")[1], mask=mask)
        else:
            getattr(ops, name)(static_adv, grad, x, eps, alpha, mask=mask)
    for replay in range(3):
        eps.copy_(per_sample(b, 0.05, 0.6, replay).double())
        alpha.copy_(per_sample(b, 0.0, 0.2, replay + 10))
        mask.copy_((torch.arange(b, device="cuda") + replay) % 3 != 0)
        start = (x_adv0 + 0.01 * replay).clamp(0, 1)
        static_adv.copy_(start)
        static_prev.copy_(x)
        if name.startswith("apgd"):
            expected, expected_prev = reference.apgd_step(
                start, x, grad, x, eps, alpha, 0.75, norm=name.split("_")[1], mask=mask
            )
            graph.replay()
            assert torch.equal(static_prev, expected_prev), f"replay {replay}: x_prev"
        else:
            expected = getattr(reference, name[:-1])(start, grad, x, eps, alpha, mask=mask)
            graph.replay()
        torch.cuda.synchronize()
        (exact_or_one_ulp if "linf" in name else within_norm_rounding)(static_adv, expected)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("shape", PATH_SHAPES, ids=PATH_IDS)
def test_cuda_graph_random_start_draws_fresh_noise_per_replay(norm, shape) -> None:
    """Under capture the start draws from torch's graph-safe generator: each replay is a new uniform point of the
    ball of the current per-sample eps (eps = 0 keeps x exactly)."""
    x = make(shape, torch.float32, seed=16)[2]
    eps = torch.full((shape[0],), 0.3, device="cuda")
    static = torch.empty_like(x)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        ops.random_start_(static, x, eps, norm)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ops.random_start_(static, x, eps, norm)
    results = []
    for replay in range(3):
        eps.copy_(per_sample(shape[0], 0.1, 0.5, replay))
        eps[-1] = 0.0
        graph.replay()
        torch.cuda.synchronize()
        assert_in_ball(static, x, eps, norm, 0.0, 1.0)
        assert torch.equal(static[-1], x[-1]), "eps 0 must keep x"
        results.append(static.clone())
    assert not torch.equal(results[0][0], results[1][0]), "each replay must draw new noise"


def test_pgd_on_gpu_drops_accuracy_and_keeps_the_model() -> None:
    from advfast.data import load_digits
    from advfast.demo import accuracy, train_classifier
    from advfast.models import digits_cnn

    x_train, y_train, x_test, y_test = load_digits(seed=0)
    model = train_classifier(digits_cnn(), x_train, y_train, epochs=10, seed=0).cuda()
    x_test, y_test = x_test.cuda(), y_test.cuda()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.Generator("cuda").manual_seed(0)
    x_adv = advfast.pgd(model, x_test, y_test, eps=0.2, steps=20, early_stop=True, generator=generator)
    assert accuracy(model, x_adv, y_test) < 0.2 < accuracy(model, x_test, y_test)
    assert_in_ball(x_adv, x_test, 0.2, "linf", 0.0, 1.0)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


# ---- more than 2^31 elements -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", OPS)
def test_more_than_two_to_the_31_elements(name) -> None:
    """A bf16 tensor of 2^31 + 4104 elements (flat indices past int32): the last samples, cut out and run
    through the reference, agree with what the op wrote there; samples are 1026 elements (odd: straddling
    packs, heads and tails)."""
    n = 1026
    batch = (2**31 + 4104) // n + 1
    needed = 3 * batch * n * 2 + 2 * batch * n * 2 + (1 << 30)  # x_adv, grad, x (+ x_prev, noise) and slack
    if _free_gpu_bytes() < needed:
        pytest.skip(f"needs {needed / 2**30:.1f} GiB of free GPU memory")
    torch.manual_seed(17)
    x = torch.rand(batch, n, device="cuda", dtype=torch.bfloat16)
    x_adv = (x + 0.01).clamp_(0, 1)
    grad = torch.randn(batch, n, device="cuda", dtype=torch.bfloat16)
    eps = per_sample(batch, 0.01, 0.5)
    mask = some_mask(batch)
    tail = slice(batch - 5000, batch)
    if name.startswith("random_start"):
        norm = name.rsplit("_", 1)[1]
        ops.random_start_(x_adv, x, eps, norm)
        assert_in_ball(x_adv[tail], x[tail], eps[tail], norm, 0.0, 1.0)
        return
    x_prev = x.clone() if name.startswith("apgd") else None
    old_tail = x_adv[tail].clone()
    if x_prev is not None:
        norm = name.split("_")[1]
        expected, _ = reference.apgd_step(
            old_tail, x[tail], grad[tail], x[tail], eps[tail], 0.02, 0.75, norm=norm, mask=mask[tail]
        )
        ops.apgd_step_(x_adv, x_prev, grad, x, eps, 0.02, 0.75, norm=norm, mask=mask)
        assert torch.equal(x_prev[tail], torch.where(mask[tail, None], old_tail, x[tail]))
    else:
        expected = getattr(reference, name[:-1])(old_tail, grad[tail], x[tail], eps[tail], 0.02, mask=mask[tail])
        getattr(ops, name)(x_adv, grad, x, eps, 0.02, mask=mask)
    (exact_or_one_ulp if "linf" in name else within_norm_rounding)(x_adv[tail], expected)
