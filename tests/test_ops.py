"""The fused ops against their pure-PyTorch reference, their invariants, their errors, and opcheck."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from helpers import (
    CPU_ISAS,
    DTYPES,
    LAYOUTS,
    assert_close_ulps,
    assert_in_ball,
    cpu_isa,
    describe_mismatch,
    in_layout,
)
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from advfast import ops, reference

BOUNDS = ((0.0, 1.0), (-1.0, 2.0), (-math.inf, math.inf))
SPECIAL_GRADS = (math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-40, -1e30)


@dataclass
class Case:
    x_adv: torch.Tensor
    grad: torch.Tensor
    x: torch.Tensor
    eps: float | torch.Tensor
    alpha: float | torch.Tensor
    lo: float
    hi: float
    mask: torch.Tensor | None

    def args(self) -> tuple:
        return (self.x_adv, self.grad, self.x, self.eps, self.alpha, self.lo, self.hi, self.mask)


@st.composite
def cases(draw: st.DrawFn, device: str = "cpu", max_batch: int = 5) -> Case:
    """A step op's arguments: any dtype, shape, layout, per-sample or scalar eps/alpha, mask, bounds, and
    gradients with NaN, +-Inf, signed zeros, denormals and huge values; x_adv possibly outside the ball."""
    dtype = draw(st.sampled_from(DTYPES))
    batch = draw(st.integers(0, max_batch))
    if draw(st.booleans()):
        trailing = [draw(st.integers(1, 4)), draw(st.integers(1, 7)), draw(st.integers(1, 7))]
    else:
        trailing = draw(st.lists(st.integers(1, 9), min_size=1, max_size=3))
    shape = (batch, *trailing)
    layouts = [draw(st.sampled_from(LAYOUTS)) for _ in range(3)]
    lo, hi = draw(st.sampled_from(BOUNDS))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))

    span_lo, span_hi = max(lo, -2.0), min(hi, 2.0)
    x = span_lo + (span_hi - span_lo) * torch.rand(shape, generator=gen, dtype=torch.float64)
    if x.numel() > 2 and math.isfinite(lo):
        x.view(-1)[0], x.view(-1)[-1] = lo, hi  # values exactly on the bounds
    x_adv = x + 1.2 * (torch.rand(shape, generator=gen, dtype=torch.float64) - 0.5)
    grad = torch.randn(shape, generator=gen, dtype=torch.float64)
    if draw(st.booleans()) and grad.numel() > 0:
        positions = torch.randint(0, grad.numel(), (max(1, grad.numel() // 5),), generator=gen)
        for k, p in enumerate(positions.tolist()):
            grad.view(-1)[p] = SPECIAL_GRADS[k % len(SPECIAL_GRADS)]

    def per_sample_or_scalar(choices: list[float]) -> float | torch.Tensor:
        if draw(st.booleans()):
            values = torch.tensor([draw(st.sampled_from(choices)) for _ in range(batch)], dtype=torch.float32)
            return values.to(device)
        return draw(st.sampled_from(choices))

    eps = per_sample_or_scalar([0.0, 1e-3, 0.03, 0.3, 1.0])
    alpha = per_sample_or_scalar([0.0, 0.01, 0.1, 0.5])
    mask = None
    if draw(st.booleans()):
        mask = (torch.rand(batch, generator=gen) < 0.6).to(device)

    def place(t: torch.Tensor, layout: str) -> torch.Tensor:
        return in_layout(t.to(device=device, dtype=dtype), layout)

    return Case(place(x_adv, layouts[0]), place(grad, layouts[1]), place(x, layouts[2]), eps, alpha, lo, hi, mask)


def check_against_reference(case: Case, op, ref, compare) -> torch.Tensor:
    expected = ref(*case.args())
    x_before, grad_before = case.x.clone(), case.grad.clone()
    strides = case.x_adv.stride()
    returned = op(*case.args())
    assert returned is case.x_adv
    assert case.x_adv.stride() == strides, "the op must keep x_adv's layout"
    assert torch.equal(case.x, x_before), "the op must not modify x"
    assert torch.equal(case.grad.nan_to_num(), grad_before.nan_to_num()), "the op must not modify grad"
    compare(case.x_adv, expected)
    assert torch.isfinite(case.x_adv).all(), "the result must be finite"
    return expected


def exact_or_one_ulp(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """The L-inf contract: float32 and float64 bit for bit, half types within one unit in the last place."""
    if actual.dtype in (torch.float32, torch.float64):
        assert torch.equal(actual, expected), describe_mismatch(actual, expected)
    else:
        assert_close_ulps(actual, expected, 1)


def within_norm_rounding(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """The L2 contract: equal up to the rounding of the per-sample norm reductions (which sum in another
    order than torch's), i.e. a few float32 ulps of the step, or one ulp of a 16-bit result."""
    if actual.dtype == torch.float64:
        torch.testing.assert_close(actual, expected, atol=1e-12, rtol=1e-12)
    elif actual.dtype == torch.float32:
        torch.testing.assert_close(actual, expected, atol=2e-6, rtol=2e-6)
    else:
        assert_close_ulps(actual, expected, 1)


@pytest.mark.parametrize("isa", CPU_ISAS)
@given(case=cases())
def test_linf_step_matches_reference(isa: str, case: Case) -> None:
    with cpu_isa(isa):
        check_against_reference(case, ops.linf_step_, reference.linf_step, exact_or_one_ulp)


@pytest.mark.parametrize("isa", CPU_ISAS)
@given(case=cases())
def test_l2_step_matches_reference(isa: str, case: Case) -> None:
    with cpu_isa(isa):
        check_against_reference(case, ops.l2_step_, reference.l2_step, within_norm_rounding)


@pytest.mark.parametrize("isa", CPU_ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_float32_linf_step_is_the_eager_formula_bit_for_bit(isa: str, dtype: torch.dtype) -> None:
    """The plain eager chain that users (and peer libraries) write, on a CIFAR-sized batch."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 32, 32, generator=gen)
    x_adv = (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    grad = torch.randn(x.shape, generator=gen)
    eps, alpha = 8 / 255, 2 / 255
    x_adv, grad, x = x_adv.to(dtype), grad.to(dtype), x.to(dtype)
    a32, g32, x32 = x_adv.float(), grad.float(), x.float()
    eager = torch.clamp(x32 + torch.clamp(a32 + alpha * g32.sign() - x32, -eps, eps), 0, 1)
    with cpu_isa(isa):
        ops.linf_step_(x_adv, grad, x, eps, alpha)
    if dtype == torch.float32:
        assert torch.equal(x_adv, eager), describe_mismatch(x_adv, eager)
    else:  # math in float32, one rounding to half at the end
        assert_close_ulps(x_adv, eager.to(dtype), 1)


@pytest.mark.parametrize("isa", CPU_ISAS)
@pytest.mark.parametrize("shape", [(1, 3, 300, 300), (3, 70001), (1, 1)])
def test_l2_step_large_and_tiny_samples(isa: str, shape: tuple[int, ...]) -> None:
    """Few large samples split each pass across threads; tiny ones run many samples per task."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(shape, generator=gen)
    x_adv = (x + 0.1 * torch.randn(shape, generator=gen)).clamp(0, 1)
    grad = torch.randn(shape, generator=gen)
    expected = reference.l2_step(x_adv, grad, x, 2.0, 0.5)
    with cpu_isa(isa):
        ops.l2_step_(x_adv, grad, x, 2.0, 0.5)
    within_norm_rounding(x_adv, expected)


@pytest.mark.parametrize("isa", CPU_ISAS)
@given(case=cases(), norm=st.sampled_from(["linf", "l2"]))
def test_steps_stay_in_ball_and_bounds(isa: str, case: Case, norm: str) -> None:
    """Whatever x_adv and grad hold, the result is finite, inside [lo, hi], and inside the eps-ball."""
    op = ops.linf_step_ if norm == "linf" else ops.l2_step_
    before = case.x_adv.clone()
    with cpu_isa(isa):
        op(*case.args())
    moved = torch.ones(before.shape[0], dtype=torch.bool) if case.mask is None else case.mask.cpu()
    if case.mask is not None:
        assert torch.equal(case.x_adv[~moved], before[~moved]), "a masked-out sample must stay bit for bit"
    eps = case.eps[moved] if isinstance(case.eps, torch.Tensor) else case.eps
    assert_in_ball(case.x_adv[moved], case.x[moved], eps, norm, case.lo, case.hi)


@pytest.mark.parametrize("op", [ops.linf_step_, ops.l2_step_])
def test_nonfinite_gradient_moves_nothing(op) -> None:
    """With every gradient entry NaN or Inf, the step only projects x_adv back into the ball."""
    x = torch.full((2, 5), 0.5)
    x_adv = x + torch.tensor([[0.05, -0.05, 0.0, 0.2, -0.2]] * 2)
    grad = torch.tensor([[math.nan, math.inf, -math.inf, math.nan, math.inf]] * 2)
    op(x_adv, grad, x, 0.1, 0.1)
    if op is ops.linf_step_:
        expected = torch.tensor([[0.55, 0.45, 0.5, 0.6, 0.4]] * 2)
    else:  # d = x_adv - x, scaled to norm 0.1
        d = torch.tensor([0.05, -0.05, 0.0, 0.2, -0.2])
        expected = (0.5 + d * (0.1 / d.norm())).expand(2, 5)
    torch.testing.assert_close(x_adv, expected, atol=1e-7, rtol=0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(norm: str, dtype: torch.dtype) -> None:
    x = torch.empty(0, 3, 4, 4, dtype=dtype)
    x_adv, grad = x.clone(), x.clone()
    step = ops.linf_step_ if norm == "linf" else ops.l2_step_
    assert step(x_adv, grad, x, 0.1, 0.01, mask=torch.empty(0, dtype=torch.bool)).shape == (0, 3, 4, 4)
    assert ops.random_start_(x_adv, x, torch.empty(0), norm).shape == (0, 3, 4, 4)


def test_grad_may_be_x_adv_itself() -> None:
    x = torch.rand(3, 10)
    x_adv = (x + 0.01).clamp(0, 1)
    expected = reference.l2_step(x_adv, x_adv, x, 0.5, 0.1)
    ops.l2_step_(x_adv, x_adv, x, 0.5, 0.1)
    within_norm_rounding(x_adv, expected)


def test_step_bumps_the_version_counter() -> None:
    """Autograd's saved-tensor checks rely on in-place ops bumping the version of what they write."""
    x = torch.rand(2, 4)
    x_adv, grad = x.clone(), torch.randn(2, 4)
    before = x_adv._version
    ops.linf_step_(x_adv, grad, x, 0.1, 0.01)
    assert x_adv._version > before


def test_l2_step_is_deterministic() -> None:
    x = torch.rand(4, 3, 64, 64)
    grad = torch.randn_like(x)
    results = []
    for _ in range(2):
        x_adv = x.clone()
        ops.l2_step_(x_adv, grad, x, 1.0, 0.3)
        results.append(x_adv)
    assert torch.equal(results[0], results[1])


# ---- random start ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("isa", CPU_ISAS)
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_random_start_matches_reference(isa: str, norm: str, dtype: torch.dtype, layout: str) -> None:
    x = in_layout(torch.rand(6, 3, 5, 7, generator=torch.Generator().manual_seed(3)).to(dtype), layout)
    eps = torch.tensor([0.0, 0.01, 0.1, 0.3, 1.0, 5.0])
    x_adv = torch.empty_like(x)
    with cpu_isa(isa):
        ops.random_start_(x_adv, x, eps, norm, generator=torch.Generator().manual_seed(7))
    expected = reference.random_start(x_adv, x, eps, norm, generator=torch.Generator().manual_seed(7))
    if norm == "linf":
        exact_or_one_ulp(x_adv, expected)
    else:
        within_norm_rounding(x_adv, expected)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@given(case=cases())
def test_random_start_stays_in_ball_and_is_reproducible(norm: str, case: Case) -> None:
    def start(x_adv: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(5)
        return ops.random_start_(x_adv, case.x, case.eps, norm, case.lo, case.hi, generator=generator)

    first = start(torch.empty(case.x.shape, dtype=case.x.dtype))
    assert_in_ball(first, case.x, case.eps, norm, case.lo, case.hi)
    assert torch.equal(first, start(torch.empty_like(first))), "the same generator state must give the same start"
    # A non-dense x_adv draws its noise in a contiguous buffer, so it gets the same start.
    strided = start(in_layout(torch.zeros_like(first), "strided"))
    assert torch.equal(first, strided)


def test_linf_random_start_is_uniform_in_the_cube() -> None:
    x = torch.zeros(200, 50)
    x_adv = torch.empty_like(x)
    ops.random_start_(x_adv, x, 0.5, "linf", lo=-1.0, hi=1.0, generator=torch.Generator().manual_seed(0))
    result = stats.kstest(x_adv.flatten().double().numpy(), stats.uniform(loc=-0.5, scale=1.0).cdf)
    assert result.pvalue > 1e-3, result


@pytest.mark.parametrize("dims", [2, 5])
def test_l2_random_start_is_uniform_in_the_ball(dims: int) -> None:
    """In n dimensions a uniform point of the ball has radius r with r^n ~ U(0, 1), and no preferred
    direction."""
    x = torch.zeros(20000, dims, dtype=torch.float64)
    x_adv = torch.empty_like(x)
    eps = 0.7
    ops.random_start_(x_adv, x, eps, "l2", lo=-10.0, hi=10.0, generator=torch.Generator().manual_seed(0))
    radius = x_adv.norm(dim=1) / eps
    assert stats.kstest((radius**dims).numpy(), "uniform").pvalue > 1e-3
    mean_direction = (x_adv / x_adv.norm(dim=1, keepdim=True)).mean(dim=0)
    assert mean_direction.abs().max() < 0.05


# ---- errors -------------------------------------------------------------------------------------------


def _step_args(**change):
    x = torch.rand(2, 3)
    args = {
        "x_adv": x.clone(),
        "grad": torch.randn(2, 3),
        "x": x,
        "eps": 0.1,
        "alpha": 0.01,
        "lo": 0.0,
        "hi": 1.0,
        "mask": None,
    }
    args.update(change)
    return args


BAD_STEP_ARGS = [
    ({"eps": -0.1}, "eps must be finite and >= 0"),
    ({"eps": math.nan}, "eps must be finite"),
    ({"alpha": -1.0}, "alpha must be finite and >= 0"),
    ({"alpha": math.inf}, "alpha must be finite"),
    ({"lo": 1.0, "hi": 0.0}, "bounds need lo <= hi"),
    ({"lo": math.nan}, "bounds must not be NaN"),
    ({"grad": torch.randn(2, 4)}, "grad must have the shape of x_adv"),
    ({"x": torch.rand(2, 3, dtype=torch.float64)}, "x must have the dtype of x_adv"),
    ({"x": torch.rand(2, 3, device="meta")}, "x must be on the device of x_adv"),
    ({"x_adv": torch.zeros(2, 3, dtype=torch.int64)}, "x_adv must be float32, float64, float16 or bfloat16"),
    ({"x_adv": torch.tensor(0.5), "grad": torch.tensor(0.1), "x": torch.tensor(0.5)}, "batch dimension"),
    ({"eps": torch.full((3,), 0.1)}, "eps per sample must have shape [2]"),
    ({"alpha": torch.ones(2, dtype=torch.int32)}, "alpha per sample must be floating"),
    ({"mask": torch.ones(2)}, "mask must be bool"),
    ({"mask": torch.ones(3, dtype=torch.bool)}, "mask must have shape [2]"),
    ({"x_adv": torch.rand(1, 3).expand(2, 3)}, "internal overlap"),
]


@pytest.mark.parametrize("op", [ops.linf_step_, ops.l2_step_], ids=["linf", "l2"])
@pytest.mark.parametrize(("change", "message"), BAD_STEP_ARGS, ids=[m for _, m in BAD_STEP_ARGS])
def test_step_rejects_bad_arguments(op, change: dict, message: str) -> None:
    args = _step_args(**change)
    with pytest.raises(RuntimeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        op(**args)


def test_step_rejects_x_sharing_memory_with_x_adv() -> None:
    x = torch.rand(2, 3)
    with pytest.raises(RuntimeError, match="x_adv and x share memory"):
        ops.linf_step_(x, torch.randn(2, 3), x, 0.1, 0.01)


def test_python_wrappers_reject_non_numbers() -> None:
    args = _step_args(eps="0.1")
    with pytest.raises(TypeError, match="eps must be a float or a \\[B\\] tensor"):
        ops.linf_step_(**args)


def test_random_start_rejects_unknown_norm() -> None:
    x = torch.rand(2, 3)
    with pytest.raises(RuntimeError, match='norm must be "linf" or "l2", got "l1"'):
        ops.random_start_(torch.empty_like(x), x, 0.1, "l1")


# ---- opcheck --------------------------------------------------------------------------------------------


def _opcheck_samples() -> list[tuple[str, tuple, dict]]:
    x = torch.rand(3, 2, 4, 4)
    grad = torch.randn_like(x)
    eps_t = torch.tensor([0.0, 0.1, 0.2])
    mask = torch.tensor([True, False, True])
    samples = []
    for name in ("linf_step_", "l2_step_"):
        samples.append((name, (x.clone(), grad, x, 0.1, 0.02, 0.0, 1.0), {}))
        samples.append((name, (x.clone(), grad, x, 0.0, 0.0, 0.0, 1.0, eps_t, eps_t, mask), {}))
        cl = x.contiguous(memory_format=torch.channels_last)
        samples.append((name, (cl.clone(), grad, cl, 0.1, 0.02, -1.0, 2.0), {}))
    for norm in ("linf", "l2"):
        samples.append(("random_start_", (torch.empty_like(x), x, 0.1, norm, 0.0, 1.0), {}))
        samples.append(("random_start_", (torch.empty_like(x), x, 0.0, norm, 0.0, 1.0, eps_t), {}))
    return samples


@pytest.mark.parametrize(("name", "args", "kwargs"), _opcheck_samples())
def test_opcheck(name: str, args: tuple, kwargs: dict) -> None:
    """Schema (declared mutation), autograd registration, fake kernel and AOT dispatch agree with the op."""
    op = getattr(torch.ops.advfast, name).default
    # The random op draws different noise on each of opcheck's calls, so only its non-numeric checks apply.
    test_utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    if name != "random_start_":
        test_utils = (*test_utils, "test_aot_dispatch_dynamic")
    torch.library.opcheck(op, args, kwargs, test_utils=test_utils)
