"""The ops inside torch.compile(fullgraph=True): their fake kernels let the whole loop trace as one graph."""

from __future__ import annotations

import pytest
import torch

from advfast import ops


def perturbation_loop(x_adv: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A few ascent steps with an analytic stand-in for the input gradient, alternating the two norms."""
    eps = torch.full((x.shape[0],), 0.2)
    for _ in range(3):
        grad = torch.sin(x_adv * weight)
        ops.linf_step_(x_adv, grad, x, 0.1, 0.03)
        ops.l2_step_(x_adv, torch.cos(x_adv * weight), x, eps, 0.05)
    return x_adv


@pytest.mark.slow
def test_compiled_loop_matches_eager() -> None:
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 6, 6, generator=gen)
    weight = torch.randn(3, 6, 6, generator=gen)
    eager = perturbation_loop(x.clone(), x, weight)
    compiled = torch.compile(perturbation_loop, fullgraph=True)(x.clone(), x, weight)
    torch.testing.assert_close(compiled, eager, atol=1e-6, rtol=1e-6)
    assert not torch.equal(eager, x), "the loop must have moved x_adv"
