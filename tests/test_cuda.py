"""CUDA kernels against the reference (on-chip and chunked L2 paths, packs and scalar tails, layouts), CUDA
graphs, and pgd on the GPU. Skipped unless this build has CUDA kernels and a GPU is present."""

from __future__ import annotations

import pytest
import torch
from helpers import (
    DTYPES,
    LAYOUTS,
    assert_close_ulps,
    assert_in_ball,
    cuda_available,
    describe_mismatch,
    in_layout,
)

import advfast
from advfast import ops, reference

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not cuda_available(), reason="needs a CUDA build of advfast and a GPU"),
]

# (shape, why): [B, C, H, W] sizes that hit each kernel path.
SHAPES = [
    ((64, 3, 32, 32), "CIFAR: L2 on chip, 128-bit packs; APGD float32 on chip past 48 KiB (opt-in)"),
    ((5, 1, 28, 28), "MNIST: L2 on chip"),
    ((3, 3, 64, 64), "large samples: L2 chunked, several chunks"),
    ((2, 3, 7, 5), "odd sizes: scalar path"),
    ((1, 3, 150, 150), "one large sample, chunk tail"),
    ((0, 3, 4, 4), "empty batch"),
]


def make(shape, dtype, layout, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen)
    x_adv = x + 0.2 * (torch.rand(shape, generator=gen) - 0.5)
    grad = torch.randn(shape, generator=gen)
    if grad.numel() > 10:
        grad.view(-1)[:5] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0])
    return [in_layout(t.to(dtype).cuda(), layout) for t in (x_adv, grad, x)]


def per_sample(batch: int) -> torch.Tensor:
    return torch.linspace(0.0, 0.5, batch, device="cuda")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "why"), SHAPES, ids=[why for _, why in SHAPES])
def test_linf_step_matches_reference(shape, why, dtype, layout) -> None:
    x_adv, grad, x = make(shape, dtype, layout)
    for eps, alpha, mask in [
        (8 / 255, 2 / 255, None),
        (per_sample(shape[0]), per_sample(shape[0]), torch.arange(shape[0], device="cuda") % 2 == 0),
    ]:
        a = x_adv.clone()
        expected = reference.linf_step(a, grad, x, eps, alpha, mask=mask)
        ops.linf_step_(a, grad, x, eps, alpha, mask=mask)
        if dtype in (torch.float32, torch.float64):
            assert torch.equal(a, expected), describe_mismatch(a, expected)
        else:
            assert_close_ulps(a, expected, 1)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "why"), SHAPES, ids=[why for _, why in SHAPES])
def test_l2_step_matches_reference(shape, why, dtype, layout) -> None:
    x_adv, grad, x = make(shape, dtype, layout)
    for eps, alpha, mask in [
        (0.5, 0.2, None),
        (per_sample(shape[0]), 0.1, torch.arange(shape[0], device="cuda") % 3 != 0),
    ]:
        a = x_adv.clone()
        expected = reference.l2_step(a, grad, x, eps, alpha, mask=mask)
        ops.l2_step_(a, grad, x, eps, alpha, mask=mask)
        # nvcc contracts a*b+c into FMAs and the norms sum in another order: a few float32 ulps.
        if dtype == torch.float64:
            torch.testing.assert_close(a, expected, atol=1e-12, rtol=1e-12)
        elif dtype == torch.float32:
            torch.testing.assert_close(a, expected, atol=4e-6, rtol=4e-6)
        else:
            assert_close_ulps(a, expected, 1)
        if mask is None:
            assert_in_ball(a, x, eps, "l2", 0.0, 1.0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "why"), SHAPES, ids=[why for _, why in SHAPES])
def test_random_start_matches_reference(shape, why, dtype, norm) -> None:
    x = torch.rand(shape, device="cuda").to(dtype)
    eps = per_sample(shape[0]) if shape[0] else 0.1
    x_adv = torch.empty_like(x)
    ops.random_start_(x_adv, x, eps, norm, generator=torch.Generator("cuda").manual_seed(3))
    expected = reference.random_start(x_adv, x, eps, norm, generator=torch.Generator("cuda").manual_seed(3))
    if dtype == torch.float64:
        torch.testing.assert_close(x_adv, expected, atol=1e-12, rtol=1e-12)
    elif dtype == torch.float32:
        torch.testing.assert_close(x_adv, expected, atol=4e-6, rtol=4e-6)
    else:
        assert_close_ulps(x_adv, expected, 1)
    assert_in_ball(x_adv, x, eps, norm, 0.0, 1.0)


def close_after_norms(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """L2 on CUDA: nvcc contracts a*b+c into FMAs and the norms sum in another order: a few float32 ulps."""
    if actual.dtype == torch.float64:
        torch.testing.assert_close(actual, expected, atol=1e-12, rtol=1e-12)
    elif actual.dtype == torch.float32:
        torch.testing.assert_close(actual, expected, atol=4e-6, rtol=4e-6)
    else:
        assert_close_ulps(actual, expected, 1)


@pytest.mark.parametrize("momentum", [1.0, 0.75])
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "why"), SHAPES, ids=[why for _, why in SHAPES])
def test_apgd_step_matches_reference(shape, why, dtype, layout, norm, momentum) -> None:
    x_adv, grad, x = make(shape, dtype, layout)
    x_prev = make(shape, dtype, layout, seed=1)[0]
    eps0 = 8 / 255 if norm == "linf" else 0.5
    for eps, eta, mask in [
        (eps0, 2 * eps0, None),
        (per_sample(shape[0]), per_sample(shape[0]), torch.arange(shape[0], device="cuda") % 3 != 0),
    ]:
        a, p = x_adv.clone(), x_prev.clone()
        expected_adv, expected_prev = reference.apgd_step(a, p, grad, x, eps, eta, momentum, norm=norm, mask=mask)
        ops.apgd_step_(a, p, grad, x, eps, eta, momentum, norm=norm, mask=mask)
        if norm == "l2":
            close_after_norms(a, expected_adv)
        elif dtype in (torch.float32, torch.float64):
            assert torch.equal(a, expected_adv), describe_mismatch(a, expected_adv)
        else:
            assert_close_ulps(a, expected_adv, 1)
        assert torch.equal(p, expected_prev), "x_prev must become the old x_adv (masked samples: stay)"
        if mask is None:
            assert_in_ball(a, x, eps, norm, 0.0, 1.0)


def test_apgd_l2_is_deterministic_on_the_chunked_path() -> None:
    x_adv, grad, x = make((4, 3, 128, 128), torch.float32, "contiguous")
    x_prev = make((4, 3, 128, 128), torch.float32, "contiguous", seed=1)[0]
    results = []
    for _ in range(3):
        a = x_adv.clone()
        ops.apgd_step_(a, x_prev.clone(), grad, x, 2.0, 0.5, norm="l2")
        results.append(a)
    assert torch.equal(results[0], results[1]) and torch.equal(results[1], results[2])


def test_l2_step_is_deterministic_on_the_chunked_path() -> None:
    x_adv, grad, x = make((4, 3, 128, 128), torch.float32, "contiguous")
    results = []
    for _ in range(3):
        a = x_adv.clone()
        ops.l2_step_(a, grad, x, 2.0, 0.5)
        results.append(a)
    assert torch.equal(results[0], results[1]) and torch.equal(results[1], results[2])


def test_ops_run_under_cuda_graph_capture() -> None:
    x_adv, grad, x = make((16, 3, 32, 32), torch.float32, "contiguous")
    eps = per_sample(16)
    static = x_adv.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up off the default stream, as graph capture requires
        ops.linf_step_(static.clone(), grad, x, eps, 0.01)
    torch.cuda.current_stream().wait_stream(stream)
    prev = x.clone()
    with torch.cuda.stream(stream):
        for norm in ("linf", "l2"):  # APGD's on-chip L2 kernel opts in to more shared memory on its first call
            ops.apgd_step_(static.clone(), prev.clone(), grad, x, eps, 0.01, norm=norm)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ops.linf_step_(static, grad, x, eps, 0.01)
        ops.l2_step_(static, grad, x, eps, 0.05)
        ops.apgd_step_(static, prev, grad, x, eps, 0.02, norm="linf")
        ops.apgd_step_(static, prev, grad, x, eps, 0.02, norm="l2")
    expected = reference.l2_step(reference.linf_step(x_adv, grad, x, eps, 0.01), grad, x, eps, 0.05)
    expected, expected_prev = reference.apgd_step(expected, x, grad, x, eps, 0.02, norm="linf")
    expected, expected_prev = reference.apgd_step(expected, expected_prev, grad, x, eps, 0.02, norm="l2")
    static.copy_(x_adv)
    prev.copy_(x)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(static, expected, atol=4e-6, rtol=4e-6)
    torch.testing.assert_close(prev, expected_prev, atol=4e-6, rtol=4e-6)


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
