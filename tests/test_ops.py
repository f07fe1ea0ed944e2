"""The fused ops against their pure-PyTorch reference, their invariants, their errors, and opcheck."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pytest
import torch
from helpers import (
    CPU_ISAS,
    DTYPES,
    LAYOUTS,
    OPS,
    assert_close_ulps,
    assert_in_ball,
    cpu_isa,
    describe_mismatch,
    exact_or_one_ulp,
    in_layout,
    run_op,
    within_norm_rounding,
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
    x_prev: torch.Tensor  # for the APGD step: the previous iterate, in its own layout

    def args(self) -> tuple:
        return (self.x_adv, self.grad, self.x, self.eps, self.alpha, self.lo, self.hi, self.mask)

    def apgd_args(self, momentum: float, norm: str) -> tuple:
        """apgd_step_'s arguments, with alpha as the step size eta."""
        return (
            self.x_adv,
            self.x_prev,
            self.grad,
            self.x,
            self.eps,
            self.alpha,
            momentum,
            self.lo,
            self.hi,
            norm,
            self.mask,
        )


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
    layouts = [draw(st.sampled_from(LAYOUTS)) for _ in range(4)]
    lo, hi = draw(st.sampled_from(BOUNDS))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))

    span_lo, span_hi = max(lo, -2.0), min(hi, 2.0)
    x = span_lo + (span_hi - span_lo) * torch.rand(shape, generator=gen, dtype=torch.float64)
    if x.numel() > 2 and math.isfinite(lo):
        x.view(-1)[0], x.view(-1)[-1] = lo, hi  # values exactly on the bounds
    x_adv = x + 1.2 * (torch.rand(shape, generator=gen, dtype=torch.float64) - 0.5)
    x_prev = x + 1.2 * (torch.rand(shape, generator=gen, dtype=torch.float64) - 0.5)
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

    return Case(
        place(x_adv, layouts[0]),
        place(grad, layouts[1]),
        place(x, layouts[2]),
        eps,
        alpha,
        lo,
        hi,
        mask,
        place(x_prev, layouts[3]),
    )


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


# ---- APGD momentum step ---------------------------------------------------------------------------------

MOMENTA = (1.0, 0.75, 0.0, 0.3)


def check_apgd_against_reference(case: Case, momentum: float, norm: str) -> None:
    args = case.apgd_args(momentum, norm)
    expected_adv, expected_prev = reference.apgd_step(*args)
    x_before, grad_before, x_adv_before = case.x.clone(), case.grad.clone(), case.x_adv.clone()
    strides = (case.x_adv.stride(), case.x_prev.stride())
    returned = ops.apgd_step_(*args)
    assert returned is case.x_adv
    assert (case.x_adv.stride(), case.x_prev.stride()) == strides, "the op must keep both layouts"
    assert torch.equal(case.x, x_before), "the op must not modify x"
    assert torch.equal(case.grad.nan_to_num(), grad_before.nan_to_num()), "the op must not modify grad"
    (exact_or_one_ulp if norm == "linf" else within_norm_rounding)(case.x_adv, expected_adv)
    assert torch.equal(case.x_prev, expected_prev), "x_prev must become the old x_adv (masked: stay)"
    active = torch.ones(case.x.shape[0], dtype=torch.bool) if case.mask is None else case.mask
    assert torch.equal(case.x_prev[active], x_adv_before[active])
    assert torch.isfinite(case.x_adv).all()


@pytest.mark.parametrize("isa", CPU_ISAS)
@pytest.mark.parametrize("norm", ["linf", "l2"])
@given(case=cases(), momentum=st.sampled_from(MOMENTA))
def test_apgd_step_matches_reference(isa: str, norm: str, case: Case, momentum: float) -> None:
    with cpu_isa(isa):
        check_apgd_against_reference(case, momentum, norm)


@pytest.mark.parametrize("isa", CPU_ISAS)
@given(case=cases(), norm=st.sampled_from(["linf", "l2"]), momentum=st.sampled_from(MOMENTA))
def test_apgd_step_stays_in_ball_and_bounds(isa: str, case: Case, norm: str, momentum: float) -> None:
    """Whatever x_adv, x_prev and grad hold: finite, inside [lo, hi] and the eps-ball; masked samples keep both
    tensors bit for bit."""
    adv_before, prev_before = case.x_adv.clone(), case.x_prev.clone()
    with cpu_isa(isa):
        ops.apgd_step_(*case.apgd_args(momentum, norm))
    moved = torch.ones(adv_before.shape[0], dtype=torch.bool) if case.mask is None else case.mask.cpu()
    assert torch.equal(case.x_adv[~moved], adv_before[~moved]), "a masked-out x_adv must stay bit for bit"
    assert torch.equal(case.x_prev[~moved], prev_before[~moved]), "a masked-out x_prev must stay bit for bit"
    eps = case.eps[moved] if isinstance(case.eps, torch.Tensor) else case.eps
    assert_in_ball(case.x_adv[moved], case.x[moved], eps, norm, case.lo, case.hi)


def _autoattack_linf(x_adv, x_prev, grad, x, eps: float, step_size, a: float) -> torch.Tensor:
    """The L-inf update as the APGD reference code (fra31/auto-attack) states it, written out here with plain
    torch ops: step_size a [B, 1, 1, 1] tensor, eps a float, bounds [0, 1]."""
    grad2 = x_adv - x_prev
    z = x_adv + step_size * torch.sign(grad)
    z = torch.clamp(torch.min(torch.max(z, x - eps), x + eps), 0.0, 1.0)
    v = x_adv + (z - x_adv) * a + grad2 * (1 - a)
    return torch.clamp(torch.min(torch.max(v, x - eps), x + eps), 0.0, 1.0)


def _autoattack_l2(x_adv, x_prev, grad, x, eps: float, step_size, a: float) -> torch.Tensor:
    """The L2 update as the APGD reference code states it (normalise = divide by norm + 1e-12)."""

    def norm(t: torch.Tensor) -> torch.Tensor:
        return (t**2).flatten(1).sum(-1).sqrt().view(-1, 1, 1, 1)

    def project(v: torch.Tensor) -> torch.Tensor:
        d = v - x
        return torch.clamp(x + d / (norm(d) + 1e-12) * torch.min(eps * torch.ones_like(x), norm(d)), 0.0, 1.0)

    grad2 = x_adv - x_prev
    z = project(x_adv + step_size * grad / (norm(grad) + 1e-12))
    return project(x_adv + (z - x_adv) * a + grad2 * (1 - a))


@pytest.mark.parametrize("isa", CPU_ISAS)
@pytest.mark.parametrize("a", [1.0, 0.75])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_step_is_the_reference_code_update(isa: str, a: float, norm: str) -> None:
    """Against APGD's own statement of the update, on a CIFAR-sized float32 batch with per-sample step sizes
    (APGD halves them per sample): L-inf bit for bit, L2 up to the norms' rounding and the 1e-12 the reference
    code adds to a norm it divides by."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 32, 32, generator=gen)
    eps = 8 / 255 if norm == "linf" else 0.5
    scale = eps if norm == "linf" else eps / 30
    x_prev = (x + scale * (2 * torch.rand(x.shape, generator=gen) - 1)).clamp(0, 1)
    x_adv = (x + scale * (2 * torch.rand(x.shape, generator=gen) - 1)).clamp(0, 1)
    grad = torch.randn(x.shape, generator=gen)
    eta = 2 * eps * torch.tensor([1.0, 0.5, 0.25, 0.125]).repeat(4)
    official = _autoattack_linf if norm == "linf" else _autoattack_l2
    expected = official(x_adv, x_prev, grad, x, eps, eta.view(-1, 1, 1, 1), a)
    old = x_adv.clone()
    with cpu_isa(isa):
        ops.apgd_step_(x_adv, x_prev, grad, x, eps, eta, momentum=a, norm=norm)
    if norm == "linf":
        assert torch.equal(x_adv, expected), describe_mismatch(x_adv, expected)
    else:
        torch.testing.assert_close(x_adv, expected, atol=1e-6, rtol=1e-6)
    assert torch.equal(x_prev, old)
    assert not torch.equal(x_adv, old), "the step must move"


@pytest.mark.parametrize("isa", CPU_ISAS)
@pytest.mark.parametrize("shape", [(1, 3, 300, 300), (3, 70001), (1, 1)])
def test_apgd_l2_step_large_and_tiny_samples(isa: str, shape: tuple[int, ...]) -> None:
    """Few large samples split each of the four passes across threads; tiny ones run many samples per task."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(shape, generator=gen)
    x_adv = (x + 0.1 * torch.randn(shape, generator=gen)).clamp(0, 1)
    x_prev = (x + 0.1 * torch.randn(shape, generator=gen)).clamp(0, 1)
    grad = torch.randn(shape, generator=gen)
    expected, _ = reference.apgd_step(x_adv, x_prev, grad, x, 2.0, 0.5, norm="l2")
    with cpu_isa(isa):
        ops.apgd_step_(x_adv, x_prev, grad, x, 2.0, 0.5, norm="l2")
    within_norm_rounding(x_adv, expected)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_nonfinite_gradient_moves_nothing(norm: str) -> None:
    """With every gradient entry NaN or Inf, z is x_adv projected, and momentum 1 returns that projection."""
    x = torch.full((2, 5), 0.5)
    x_adv = x + torch.tensor([[0.05, -0.05, 0.0, 0.2, -0.2]] * 2)
    grad = torch.tensor([[math.nan, math.inf, -math.inf, math.nan, math.inf]] * 2)
    ops.apgd_step_(x_adv, torch.zeros_like(x), grad, x, 0.1, 0.1, momentum=1.0, norm=norm)
    if norm == "linf":
        expected = torch.tensor([[0.55, 0.45, 0.5, 0.6, 0.4]] * 2)
    else:
        d = torch.tensor([0.05, -0.05, 0.0, 0.2, -0.2])
        expected = (0.5 + d * (0.1 / d.norm())).expand(2, 5)
    torch.testing.assert_close(x_adv, expected, atol=1e-7, rtol=0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_momentum_zero_continues_the_last_move(norm: str) -> None:
    """momentum 0 ignores the gradient: x_adv + (x_adv - x_prev), projected."""
    x = torch.full((1, 4), 0.5)
    x_prev = torch.tensor([[0.50, 0.52, 0.48, 0.5]])
    x_adv = torch.tensor([[0.51, 0.53, 0.47, 0.5]])
    ops.apgd_step_(x_adv, x_prev, torch.randn(1, 4), x, 1.0, 0.3, momentum=0.0, norm=norm)
    torch.testing.assert_close(x_adv, torch.tensor([[0.52, 0.54, 0.46, 0.5]]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_apgd_empty_batch(norm: str, dtype: torch.dtype) -> None:
    x = torch.empty(0, 3, 4, 4, dtype=dtype)
    x_adv, x_prev = x.clone(), x.clone()
    out = ops.apgd_step_(x_adv, x_prev, x.clone(), x, 0.1, torch.empty(0), norm=norm, mask=torch.empty(0).bool())
    assert out.shape == (0, 3, 4, 4)


def test_apgd_step_bumps_both_version_counters() -> None:
    x = torch.rand(2, 4)
    x_adv, x_prev = x.clone(), x.clone()
    before = (x_adv._version, x_prev._version)
    ops.apgd_step_(x_adv, x_prev, torch.randn(2, 4), x, 0.1, 0.01)
    assert x_adv._version > before[0] and x_prev._version > before[1]


def test_apgd_step_refuses_tensors_that_require_grad() -> None:
    x = torch.rand(2, 4)
    x_prev = x.clone().requires_grad_(True)
    with pytest.raises(RuntimeError, match="x_prev requires grad"):
        ops.apgd_step_(x.clone(), x_prev, torch.randn(2, 4), x, 0.1, 0.01)


def test_apgd_step_l2_is_deterministic() -> None:
    x = torch.rand(4, 3, 64, 64)
    grad, x_prev = torch.randn_like(x), x.clone()
    results = []
    for _ in range(2):
        x_adv = (x + 0.01).clamp(0, 1)
        ops.apgd_step_(x_adv, x_prev.clone(), grad, x, 1.0, 0.3, norm="l2")
        results.append(x_adv)
    assert torch.equal(results[0], results[1])


# ---- contract edges found by fault injection ------------------------------------------------------------
# Each op is called through one signature here (helpers.run_op), so every edge is checked on every op and
# against the reference.


def same_as_reference(name: str, actual: torch.Tensor, expected: torch.Tensor) -> None:
    if "linf" in name:
        exact_or_one_ulp(actual, expected)
    else:
        within_norm_rounding(actual, expected)


def applicable(arguments: list, key=lambda a: a) -> list[tuple]:
    """(op name, argument) pairs, leaving out the step size and mask for random_start_ (it has neither)."""
    return [
        (name, a)
        for name in OPS
        for a in arguments
        if not (name.startswith("random_start") and ({"alpha", "mask"} & set(key(a))))
    ]


@pytest.mark.parametrize(
    ("name", "scalar"), applicable([("eps", 1e39), ("alpha", 1e39), ("eps", 3.5e38)], key=lambda a: [a[0]])
)
def test_float_scalars_are_checked_in_the_math_dtype(name: str, scalar: tuple[str, float]) -> None:
    """1e39 is a finite double but an infinite float32: an error naming the argument and the dtype, for float32
    and the half types (which compute in float32); float64 computes in float64 and accepts it."""
    argument, value = scalar
    x = torch.rand(2, 5)
    scalars = {"eps": 0.1, "alpha": 0.01, argument: value}
    op_name = {"alpha": "eta"}.get(argument, argument) if name.startswith("apgd") else argument
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        with pytest.raises(RuntimeError, match=rf"{op_name} must be finite and >= 0 in float32"):
            run_op(name, x.clone().to(dtype), torch.randn(2, 5).to(dtype), x.to(dtype), **scalars)
    x64 = x.double()
    x_adv = x64.clone()
    run_op(name, x_adv, torch.randn(2, 5, dtype=torch.float64), x64, **scalars, lo=-math.inf, hi=math.inf)
    assert torch.isfinite(x_adv).all()


@pytest.mark.parametrize("isa", CPU_ISAS)
@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_unusable_per_sample_values_count_as_zero(isa: str, name: str, dtype: torch.dtype) -> None:
    """A per-sample eps or step size that is +inf, -inf, NaN, negative or beyond the math dtype's range moves
    nothing: the same result as 0 there, finite, as in the reference."""
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(6, 3, 4, generator=gen).to(dtype)
    start = (x.double() + 0.05 * torch.randn(x.shape, generator=gen, dtype=torch.float64)).clamp(0, 1).to(dtype)
    grad = torch.randn(x.shape, generator=gen).to(dtype)
    grad[:, 0, 0] = 0.0  # sign(0) = 0: inf * 0 made a NaN
    bad = torch.tensor([math.inf, -math.inf, math.nan, -1.0, 1e300, 0.2], dtype=torch.float64)
    zeroed = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.2], dtype=torch.float64)
    if dtype == torch.float64:
        bad[4] = zeroed[4] = 0.3  # 1e300 is usable in float64
    with cpu_isa(isa):
        for which in ("eps", "alpha"):
            if which == "alpha" and name.startswith("random_start"):
                continue
            values = {"eps": 0.1, "alpha": 0.05}
            x_bad, x_zero = start.clone(), start.clone()
            expected = run_op(name, x_bad, grad, x, **{**values, which: bad}, reference_too=True)
            run_op(name, x_zero, grad, x, **{**values, which: zeroed})
            assert torch.isfinite(x_bad).all(), f"{which}: non-finite result"
            assert torch.equal(x_bad, x_zero), f"{which}: {describe_mismatch(x_bad, x_zero)}"
            same_as_reference(name, x_bad, expected)


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_results_are_finite_for_huge_radii_and_infinite_bounds(name: str, dtype: torch.dtype) -> None:
    """With bounds (-inf, inf) and eps or a step near the largest finite value of the math dtype, x + eps*n
    overflows the storage dtype (float16 already at 65504): the result must still be finite (the bounds are
    intersected with the dtype's finite range), as in the reference."""
    largest = torch.finfo(reference.math_dtype(dtype)).max
    x = torch.rand(3, 8).to(dtype) * 2 - 1
    grad = torch.randn(3, 8).to(dtype)
    for eps, alpha in [(largest / 2, largest / 2), (largest, 1.0), (1e30, 1e30)]:
        x_adv = (x.double() + 0.1).to(dtype)
        expected = run_op(name, x_adv, grad, x, eps, alpha, -math.inf, math.inf, reference_too=True)
        assert torch.isfinite(x_adv).all(), f"eps={eps:g}: {x_adv}"
        assert torch.isfinite(expected).all()
        if not name.startswith("random_start") and "l2" not in name:
            exact_or_one_ulp(x_adv, expected)


@pytest.mark.parametrize("isa", CPU_ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(4, 3, 5), (1, 3, 300, 300)])  # many samples; one sample, passes split
def test_l2_norms_do_not_overflow(isa: str, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    """||g||^2 overflows float32 once an entry passes 1.8e19 (float64: 1.3e154), and then the step vanished
    (eps / inf = 0): with huge gradient entries or a huge alpha the L2 ops still step, as the reference does."""
    big = 1e20 if dtype != torch.float64 else 1e200
    if dtype == torch.float16:
        big = 6e4  # float16 storage cannot hold more; its squares overflow float16, not the float32 math
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(shape, dtype=dtype)  # near 0, 16-bit storage resolves a 1e-4 move per element
    grad = (torch.randn(shape, generator=gen) * big).to(dtype)
    grad.view(grad.shape[0], -1)[:, 0] = big
    for alpha, eps in [(0.05, 1.0), (1e30 if dtype != torch.float64 else 1e300, 1.0)]:
        for name in ("l2_step_", "apgd_l2"):
            x_adv = x.clone()
            with cpu_isa(isa):
                expected = run_op(name, x_adv, grad, x, eps, alpha, -10.0, 10.0, reference_too=True)
            moved = (x_adv.double() - x.double()).flatten(1).norm(dim=1)
            assert (moved > 0.5 * min(alpha, eps)).all(), f"{name} alpha={alpha:g}: moved only {moved.tolist()}"
            assert_in_ball(x_adv, x, eps, "l2", -10.0, 10.0)
            same_as_reference(name, x_adv, expected)


def test_reference_norm_is_overflow_safe() -> None:
    """The oracle itself: per-sample norms of huge float32 and float64 entries, and of an empty sample."""
    t32 = torch.full((2, 4), 1e20)
    torch.testing.assert_close(reference._sample_norm(t32).flatten(), torch.full((2,), 2e20))
    t64 = torch.full((2, 4), 1e200, dtype=torch.float64)
    torch.testing.assert_close(reference._sample_norm(t64).flatten(), torch.full((2,), 2e200, dtype=torch.float64))
    assert reference._sample_norm(torch.empty(3, 0)).flatten().tolist() == [0.0, 0.0, 0.0]


# Every tensor of an op must be on x_adv's device: a per-sample tensor or mask on the meta device beside CPU
# tensors made the dispatcher pick the fake kernel, which then changed nothing without an error.
META_ARGUMENTS = [
    ("linf_step_", "eps"),
    ("linf_step_", "alpha"),
    ("linf_step_", "mask"),
    ("l2_step_", "eps"),
    ("l2_step_", "mask"),
    ("random_start_linf", "eps"),
    ("apgd_linf", "eps"),
    ("apgd_l2", "alpha"),
    ("apgd_l2", "mask"),
]


@pytest.mark.parametrize(("name", "argument"), META_ARGUMENTS)
def test_a_per_sample_tensor_on_another_device_is_an_error(name: str, argument: str) -> None:
    x = torch.rand(2, 3)
    values = {"eps": 0.1, "alpha": 0.01, "mask": None}
    values[argument] = torch.ones(2, dtype=torch.bool if argument == "mask" else torch.float32, device="meta")
    shown = "eta" if argument == "alpha" and name.startswith("apgd") else argument
    with pytest.raises(RuntimeError, match=rf"{shown}( per sample)? must be on (the device of x_adv|cpu)"):
        run_op(name, x.clone(), torch.randn(2, 3), x, **values)


@pytest.mark.parametrize(("name", "argument"), applicable(["eps", "alpha", "mask"], key=lambda a: [a]))
def test_per_sample_tensors_must_not_alias_x_adv(name: str, argument: str) -> None:
    """l2_step_ read a per-sample eps that was a view of x_adv after overwriting it: every op rejects a
    per-sample tensor or mask that shares memory with a tensor it writes."""
    x = torch.rand(2, 3)
    x_adv = x.clone() if argument != "mask" else torch.zeros(2, 3, dtype=torch.float32)
    values = {"eps": 0.1, "alpha": 0.01, "mask": None}
    values[argument] = x_adv[:, 0] if argument != "mask" else x_adv.view(torch.bool)[:, 0]
    shown = "eta" if argument == "alpha" and name.startswith("apgd") else argument
    with pytest.raises(RuntimeError, match=rf"x_adv and {shown} share memory"):
        run_op(name, x_adv, torch.randn(2, 3), x, **values)


@pytest.mark.parametrize("name", OPS)
def test_overlapping_non_dense_views_are_rejected(name: str) -> None:
    """ATen's overlap check gives up on non-dense tensors ("too hard"); the ops check exactly."""
    buf = torch.rand(2, 20)
    x_adv, x = buf[:, 0:16:2], buf[:, 4:20:2]  # every other column, shifted by two: they share 6 columns
    with pytest.raises(RuntimeError, match="x_adv and x share memory"):
        run_op(name, x_adv, torch.randn(2, 8), x, 0.1, 0.01)
    self_overlapping = torch.rand(20).as_strided((2, 8), (2, 1))  # not expanded, yet rows share 6 elements
    with pytest.raises(RuntimeError, match="x_adv has internal overlap"):
        run_op(name, self_overlapping, torch.randn(2, 8), torch.rand(2, 8), 0.1, 0.01)


@pytest.mark.parametrize("name", OPS)
def test_interleaved_non_dense_views_that_do_not_overlap_are_fine(name: str) -> None:
    buf = torch.rand(2, 16) * 0.8 + 0.1
    x_adv, x = buf[:, 0::2], buf[:, 1::2]  # even and odd columns of one buffer: no element in common
    x_before = x.clone()
    grad = torch.randn(2, 8)
    expected = run_op(name, x_adv.clone(), grad, x.clone(), 0.1, 0.01, reference_too=True)
    run_op(name, x_adv, grad, x, 0.1, 0.01)
    assert torch.equal(x, x_before), "x must not change"
    same_as_reference(name, x_adv, expected)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_reference_random_start_of_empty_samples(norm: str) -> None:
    """[B, 0] samples (and an empty batch): the oracle returns an empty result, as the op does, instead of
    dividing by zero."""
    for shape in [(3, 0), (0, 4), (2, 0, 5)]:
        x = torch.rand(shape)
        expected = reference.random_start(torch.empty_like(x), x, 0.1, norm)
        x_adv = torch.empty_like(x)
        assert ops.random_start_(x_adv, x, 0.1, norm).shape == expected.shape == shape


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_reference_random_start_draws_in_the_op_order_for_every_layout(norm: str, layout: str) -> None:
    """The op draws noise into x_adv itself when it is dense with the batch outermost, else into a contiguous
    buffer; a dense batch-inner x_adv used to get the reference's noise in another order."""
    x = in_layout(torch.rand(4, 3, 5, 6, generator=torch.Generator().manual_seed(1)), layout)
    x_adv = in_layout(torch.zeros(4, 3, 5, 6), layout)
    expected = reference.random_start(x_adv, x, 0.3, norm, generator=torch.Generator().manual_seed(2))
    ops.random_start_(x_adv, x, 0.3, norm, generator=torch.Generator().manual_seed(2))
    (exact_or_one_ulp if norm == "linf" else within_norm_rounding)(x_adv, expected)


BAD_SCALARS = [
    {"eps": 1e39},
    {"alpha": 1e39},
    {"eps": -0.1},
    {"alpha": math.nan},
    {"eps": math.inf},
    {"lo": 1.0, "hi": 0.0},
    {"lo": math.nan},
    {"lo": 1e39, "hi": math.inf},
]


@pytest.mark.parametrize(("name", "change"), applicable(BAD_SCALARS, key=lambda c: list(c)), ids=str)
def test_reference_and_op_reject_the_same_scalars(name: str, change: dict) -> None:
    """The oracle raises what the op raises (reference.linf_step(eps=1e39) used to fail inside torch.clamp,
    where the op silently read an infinite radius)."""
    x = torch.rand(2, 3)
    values = {"eps": 0.1, "alpha": 0.01, "lo": 0.0, "hi": 1.0, **change}
    with pytest.raises(RuntimeError) as from_op:
        run_op(name, x.clone(), torch.randn(2, 3), x, **values)
    if name.startswith("apgd"):
        values["eta"] = values.pop("alpha")
    with pytest.raises(RuntimeError) as from_reference:
        if name.startswith("apgd"):
            reference.apgd_step(
                x,
                x,
                torch.randn(2, 3),
                x,
                values["eps"],
                values["eta"],
                0.75,
                values["lo"],
                values["hi"],
                name.split("_", 1)[1],
            )
        elif name.startswith("random_start"):
            reference.random_start(x, x, values["eps"], name.rsplit("_", 1)[1], values["lo"], values["hi"])
        else:
            getattr(reference, name[:-1])(x, x, x, values["eps"], values["alpha"], values["lo"], values["hi"])
    assert str(from_reference.value) in str(from_op.value), (str(from_reference.value), str(from_op.value))


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


def _apgd_args(**change):
    x = torch.rand(2, 3)
    args = {
        "x_adv": x.clone(),
        "x_prev": x.clone(),
        "grad": torch.randn(2, 3),
        "x": x,
        "eps": 0.1,
        "eta": 0.01,
        "momentum": 0.75,
        "lo": 0.0,
        "hi": 1.0,
        "norm": "linf",
        "mask": None,
    }
    args.update(change)
    return args


BAD_APGD_ARGS = [
    ({"eps": -0.1}, "eps must be finite and >= 0"),
    ({"eta": math.inf}, "eta must be finite and >= 0"),
    ({"eta": -1.0}, "eta must be finite and >= 0"),
    ({"momentum": 1.5}, "momentum must be in [0, 1]"),
    ({"momentum": math.nan}, "momentum must be in [0, 1]"),
    ({"norm": "l1"}, 'norm must be "linf" or "l2", got "l1"'),
    ({"lo": 1.0, "hi": 0.0}, "bounds need lo <= hi"),
    ({"x_prev": torch.rand(2, 4)}, "x_prev must have the shape of x_adv"),
    ({"x_prev": torch.rand(2, 3, dtype=torch.float64)}, "x_prev must have the dtype of x_adv"),
    ({"x_prev": torch.rand(2, 3, device="meta")}, "x_prev must be on the device of x_adv"),
    ({"x_prev": torch.rand(1, 3).expand(2, 3)}, "x_prev has internal overlap"),
    ({"grad": torch.randn(3, 3)}, "grad must have the shape of x_adv"),
    ({"eta": torch.full((3,), 0.1)}, "eta per sample must have shape [2]"),
    ({"eta": torch.ones(2, dtype=torch.int32)}, "eta per sample must be floating"),
    ({"mask": torch.ones(2)}, "mask must be bool"),
    ({"x_adv": torch.zeros(2, 3, dtype=torch.int64), "x_prev": torch.zeros(2, 3, dtype=torch.int64)}, "x_adv must be"),
]


@pytest.mark.parametrize(("change", "message"), BAD_APGD_ARGS, ids=[m for _, m in BAD_APGD_ARGS])
def test_apgd_step_rejects_bad_arguments(change: dict, message: str) -> None:
    with pytest.raises(RuntimeError, match=re.escape(message)):
        ops.apgd_step_(**_apgd_args(**change))


def test_apgd_wrapper_rejects_a_momentum_that_is_not_a_number() -> None:
    with pytest.raises(TypeError, match="momentum must be a float in \\[0, 1\\]"):
        ops.apgd_step_(**_apgd_args(momentum="0.75"))


def _apgd_aliases() -> list[tuple[str, dict, str]]:
    """Arguments of apgd_step_ that share memory with x_adv or x_prev (both written at every element)."""
    x = torch.rand(2, 3)
    buf = torch.rand(2, 6)
    shared = torch.rand(2, 3)
    return [
        ("x_prev is x_adv", {"x_adv": shared, "x_prev": shared}, "x_adv and x_prev share memory"),
        ("x_prev overlaps x_adv", {"x_adv": buf[:, :3], "x_prev": buf[:, 2:5]}, "x_adv and x_prev share memory"),
        ("grad is x_adv", {"x_adv": shared, "grad": shared}, "x_adv and grad share memory"),
        ("grad is x_prev", {"x_prev": shared, "grad": shared}, "x_prev and grad share memory"),
        ("x is x_prev", {"x_prev": x, "x": x}, "x_prev and x share memory"),
        ("eta is a view of x_prev", {"x_prev": shared, "eta": shared[:, 0]}, "x_prev and eta share memory"),
        ("eps is a view of x_adv", {"x_adv": shared, "eps": shared[:, 1]}, "x_adv and eps share memory"),
    ]


@pytest.mark.parametrize(("change", "message"), [a[1:] for a in _apgd_aliases()], ids=[a[0] for a in _apgd_aliases()])
def test_apgd_step_rejects_aliasing(change: dict, message: str) -> None:
    with pytest.raises(RuntimeError, match=message):
        ops.apgd_step_(**_apgd_args(**change))


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
    x_prev = (x + 0.01 * torch.randn_like(x)).clamp(0, 1)
    for norm in ("linf", "l2"):
        samples.append(("apgd_step_", (x.clone(), x_prev.clone(), grad, x, 0.1, 0.02, 0.75, 0.0, 1.0, norm), {}))
        samples.append(
            ("apgd_step_", (x.clone(), x_prev.clone(), grad, x, 0.0, 0.0, 1.0, 0.0, 1.0, norm, eps_t, eps_t, mask), {})
        )
        cl = x.contiguous(memory_format=torch.channels_last)
        prev_cl = x_prev.contiguous(memory_format=torch.channels_last)
        samples.append(("apgd_step_", (cl.clone(), prev_cl.clone(), grad, cl, 0.1, 0.02, 0.75, -1.0, 2.0, norm), {}))
    return samples


@pytest.mark.parametrize(("name", "args", "kwargs"), _opcheck_samples(), ids=lambda v: v if isinstance(v, str) else "")
def test_opcheck(name: str, args: tuple, kwargs: dict) -> None:
    """Schema (declared mutation), autograd registration, fake kernel and AOT dispatch agree with the op."""
    op = getattr(torch.ops.advfast, name).default
    # The random op draws different noise on each of opcheck's calls, so only its non-numeric checks apply.
    test_utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    if name != "random_start_":
        test_utils = (*test_utils, "test_aot_dispatch_dynamic")
    torch.library.opcheck(op, args, kwargs, test_utils=test_utils)


def _apgd_loop(x_adv: torch.Tensor, x_prev: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """APGD-style iterations (momentum 1 first, then 0.75) with an analytic stand-in for the gradient."""
    eta = torch.full((x.shape[0],), 0.05)
    for i in range(3):
        momentum = 1.0 if i == 0 else 0.75
        ops.apgd_step_(x_adv, x_prev, torch.sin(x_adv * weight), x, 0.1, eta, momentum, norm="linf")
        ops.apgd_step_(x_adv, x_prev, torch.cos(x_adv * weight), x, 0.5, eta, momentum, norm="l2")
    return x_adv - x_prev


@pytest.mark.slow
def test_apgd_step_inside_torch_compile_fullgraph() -> None:
    """Both written tensors are tracked through the graph: the compiled loop equals the eager one."""
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 6, 6, generator=gen)
    weight = torch.randn(3, 6, 6, generator=gen)
    eager = _apgd_loop(x.clone(), x.clone(), x, weight)
    compiled = torch.compile(_apgd_loop, fullgraph=True)(x.clone(), x.clone(), x, weight)
    torch.testing.assert_close(compiled, eager, atol=1e-6, rtol=1e-6)
    assert eager.abs().max() > 0, "the loop must have moved x_adv"
