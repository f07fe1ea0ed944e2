"""advfast.pgd and advfast.fgsm on a classifier trained here on scikit-learn's digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_in_ball
from torch import nn

import advfast
from advfast import reference
from advfast.demo import accuracy
from advfast.models import digits_cnn


@pytest.fixture(scope="module")
def digits(digits_model):
    return digits_model


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="none").sum()
    (grad,) = torch.autograd.grad(loss, x)
    return grad


# ---- effect ---------------------------------------------------------------------------------------------


def test_pgd_drops_accuracy_far_below_clean(digits) -> None:
    model, x, y = digits
    clean = accuracy(model, x, y)
    assert clean > 0.93, f"the digits CNN should train to >93% (got {clean:.1%})"
    robust = accuracy(model, advfast.pgd(model, x, y, eps=0.2, steps=20, generator=seeded()), y)
    fgsm = accuracy(model, advfast.fgsm(model, x, y, eps=0.2), y)
    assert robust < 0.15, f"PGD-20 at eps=0.2 left {robust:.1%} accuracy"
    assert robust <= fgsm, "PGD should be at least as strong as FGSM"


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_more_steps_or_restarts_never_weaker(digits, norm: str) -> None:
    """With early stopping a fooled sample stays fooled, and restarts keep each sample's strongest result,
    so with the same random starts and step size every sample fooled by a weaker attack is fooled by a
    stronger one."""
    model, x, y = digits
    eps, alpha = (0.1, 0.02) if norm == "linf" else (0.6, 0.15)

    def fooled(steps: int, restarts: int) -> torch.Tensor:
        x_adv = advfast.pgd(
            model, x, y, eps=eps, alpha=alpha, norm=norm, steps=steps, restarts=restarts, early_stop=True,
            generator=seeded(),
        )  # fmt: skip
        with torch.no_grad():
            return model(x_adv).argmax(dim=1) != y

    weakest = fooled(steps=3, restarts=1)
    for stronger in (fooled(steps=10, restarts=1), fooled(steps=3, restarts=3), fooled(steps=10, restarts=3)):
        assert bool((stronger | ~weakest).all()), "a sample fooled by the weaker attack escaped the stronger"
    assert fooled(10, 3).sum() > weakest.sum(), "the stronger attacks should fool more samples here"


def test_a_model_without_input_gradient_is_not_an_error(digits) -> None:
    """Detached preprocessing gives no gradient: the attack moves nothing instead of crashing."""
    model, x, y = digits

    def detached(inputs: torch.Tensor) -> torch.Tensor:
        return model(inputs.detach())

    x_adv = advfast.pgd(detached, x, y, eps=0.1, steps=3, random_start=False)
    assert torch.equal(x_adv, x)


def test_targeted_attack_reaches_the_target(digits) -> None:
    model, x, y = digits
    target = (y + 1) % 10
    x_adv = advfast.pgd(model, x, target, eps=0.3, steps=30, targeted=True, generator=seeded())
    with torch.no_grad():
        hit = (model(x_adv).argmax(dim=1) == target).float().mean().item()
    assert hit > 0.8, f"only {hit:.1%} reached their target"


@pytest.mark.parametrize("loss", ["cw", "ce"])
def test_losses(digits, loss: str) -> None:
    model, x, y = digits
    robust = accuracy(model, advfast.pgd(model, x, y, eps=0.2, steps=20, loss=loss, generator=seeded()), y)
    assert robust < 0.15


def test_callable_loss_is_ascended(digits) -> None:
    model, x, y = digits
    calls = []

    def negative_margin_to_zero_class(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls.append(logits.shape)
        return logits[:, 0] - logits.gather(1, labels[:, None]).squeeze(1)

    x_adv = advfast.pgd(model, x, y, eps=0.3, steps=10, loss=negative_margin_to_zero_class, generator=seeded())
    assert len(calls) == 10
    with torch.no_grad():
        pushed_to_zero = (model(x_adv).argmax(dim=1) == 0).float().mean().item()
    assert pushed_to_zero > 0.5


# ---- exactness of the loop ------------------------------------------------------------------------------


def test_fgsm_is_one_reference_step_from_x(digits) -> None:
    model, x, y = digits
    grad = input_gradient(model, x, y)
    expected = reference.linf_step(x, grad, x, 0.1, 0.1)
    assert torch.equal(advfast.fgsm(model, x, y, eps=0.1), expected)
    # Equal, up to one rounding, to the textbook formula clip(x + eps * sign(grad), 0, 1).
    textbook = torch.clamp(x + 0.1 * grad.sign(), 0, 1)
    torch.testing.assert_close(expected, textbook, atol=1e-7, rtol=0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_equals_a_reference_loop(digits, norm: str) -> None:
    """The attack is exactly: random start, then per step the input gradient and the reference step."""
    model, x, y = digits
    eps, alpha, steps = (0.1, 0.03, 4) if norm == "linf" else (0.8, 0.3, 4)
    step = reference.linf_step if norm == "linf" else reference.l2_step
    x_adv = reference.random_start(x, x, eps, norm, generator=seeded(3))
    for _ in range(steps):
        x_adv = step(x_adv, input_gradient(model, x_adv, y), x, eps, alpha)
    result = advfast.pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm, generator=seeded(3))
    if norm == "linf":
        assert torch.equal(result, x_adv)
    else:  # the norm reductions round differently
        torch.testing.assert_close(result, x_adv, atol=1e-5, rtol=1e-5)


def test_fgsm_random_start_uses_wong_step(digits) -> None:
    model, x, y = digits
    start = reference.random_start(x, x, 0.1, "linf", generator=seeded(1))
    expected = reference.linf_step(start, input_gradient(model, start, y), x, 0.1, 0.125)
    assert torch.equal(advfast.fgsm(model, x, y, eps=0.1, random_start=True, generator=seeded(1)), expected)


# ---- contract: ball, bounds, inputs untouched -----------------------------------------------------------


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("restarts", [1, 2])
def test_result_is_in_ball_and_bounds_and_x_is_untouched(digits, norm: str, restarts: int) -> None:
    model, x, y = digits
    x = x.contiguous(memory_format=torch.channels_last)
    x_before = x.clone()
    eps = torch.linspace(0.0, 0.3 if norm == "linf" else 2.0, len(x))
    x_adv = advfast.pgd(model, x, y, eps=eps, norm=norm, steps=5, restarts=restarts, generator=seeded())
    assert torch.equal(x, x_before), "the caller's x must not change"
    assert not x_adv.requires_grad
    assert x_adv.dtype == x.dtype and x_adv.shape == x.shape
    assert x_adv.is_contiguous(memory_format=torch.channels_last), "x_adv keeps x's layout"
    assert_in_ball(x_adv, x, eps, norm, 0.0, 1.0)
    assert torch.equal(x_adv[0], x[0]), "eps = 0 leaves the sample as it is"


def test_float64_and_custom_bounds(digits) -> None:
    model, x, y = digits
    model64 = digits_cnn().double().eval()
    model64.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    centred = x.double() * 2 - 1
    x_adv = advfast.pgd(model64, centred, y, eps=0.2, steps=10, bounds=(-1.0, 1.0), generator=seeded())
    assert x_adv.dtype == torch.float64
    assert_in_ball(x_adv, centred, 0.2, "linf", -1.0, 1.0)


# ---- the caller's model is left as it was ---------------------------------------------------------------


class Recorder(nn.Module):
    """A model with BatchNorm and Dropout that records the mode of each forward."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2))
        self.head = nn.Linear(32, 10)
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return self.head(self.body(x))


def snapshot(model: nn.Module):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [(p.grad.clone() if p.grad is not None else None) for p in model.parameters()],
        [p.grad for p in model.parameters()],
        [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
    )


def assert_unchanged(model: nn.Module, before) -> None:
    state, training, grads, grad_objects, hooks, requires_grad = before
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), f"{k} changed"
    assert [m.training for m in model.modules()] == training, "train/eval flags changed"
    for p, g, obj in zip(model.parameters(), grads, grad_objects, strict=True):
        assert p.grad is obj, "a parameter's .grad was replaced"
        assert (g is None and p.grad is None) or torch.equal(p.grad, g), "a parameter's .grad changed"
    assert [
        (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()
    ] == hooks
    assert [p.requires_grad for p in model.parameters()] == requires_grad


@pytest.fixture
def recorder(digits):
    _, x, y = digits
    model = Recorder()
    model.train()
    model.body[1].eval()  # a mixed-mode model: the flags of each submodule must come back as they were
    for p in list(model.parameters())[:2]:
        p.grad = torch.full_like(p, 7.0)
    model.head.register_forward_hook(lambda *_: None)
    return model, x[:64], y[:64]


@pytest.mark.parametrize("attack", ["pgd", "fgsm", "pgd_restarts"])
def test_model_state_is_preserved_in_eval_mode(recorder, attack: str) -> None:
    model, x, y = recorder
    before = snapshot(model)
    if attack == "fgsm":
        advfast.fgsm(model, x, y, eps=0.1)
    else:
        advfast.pgd(model, x, y, eps=0.1, steps=3, restarts=2 if attack == "pgd_restarts" else 1)
    assert model.modes and not any(model.modes), "the attack must run the model in eval mode by default"
    assert_unchanged(model, before)


def test_model_state_is_preserved_in_as_is_mode(recorder) -> None:
    """In the model's own (train) mode BatchNorm updates its statistics during the attack; they come back."""
    model, x, y = recorder
    before = snapshot(model)
    advfast.pgd(model, x, y, eps=0.1, steps=3, model_mode="as_is")
    assert all(model.modes), "as_is must keep the model in train mode"
    assert_unchanged(model, before)


def test_model_state_is_restored_after_an_exception(recorder) -> None:
    model, x, y = recorder
    before = snapshot(model)
    original = model.forward

    def failing_forward(inputs: torch.Tensor) -> torch.Tensor:
        if len(model.modes) == 2:
            raise RuntimeError("boom")
        return original(inputs)

    model.forward = failing_forward
    with pytest.raises(RuntimeError, match="boom"):
        advfast.pgd(model, x, y, eps=0.1, steps=5, model_mode="as_is")
    del model.forward
    assert_unchanged(model, before)


def test_pgd_works_under_no_grad_and_refuses_inference_mode(digits) -> None:
    model, x, y = digits
    with torch.no_grad():
        x_adv = advfast.pgd(model, x, y, eps=0.2, steps=5, generator=seeded())
    assert accuracy(model, x_adv, y) < 0.5
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        advfast.pgd(model, x, y, eps=0.2, steps=5)


# ---- bad input ------------------------------------------------------------------------------------------

BAD_ARGUMENTS = [
    ({"eps": -0.1}, ValueError, "eps must be finite and >= 0"),
    ({"eps": math.nan}, ValueError, "eps must be finite"),
    ({"eps": "0.1"}, TypeError, "eps must be a float or a \\[B\\] tensor"),
    ({"eps": torch.full((3,), 0.1)}, ValueError, "eps per sample must have shape \\[B\\]"),
    ({"eps": torch.full((8,), -0.1)}, ValueError, "eps must be finite and >= 0 for every sample"),
    ({"alpha": 0.0}, ValueError, "alpha must be finite and > 0"),
    ({"alpha": -1.0}, ValueError, "alpha must be finite and > 0"),
    ({"steps": 0}, ValueError, "steps must be an integer >= 1"),
    ({"steps": 2.5}, ValueError, "steps must be an integer >= 1"),
    ({"restarts": 0}, ValueError, "restarts must be an integer >= 1"),
    ({"norm": "l1"}, ValueError, "norm must be one of"),
    ({"loss": "hinge"}, ValueError, "loss must be one of"),
    ({"bounds": (1.0, 0.0)}, ValueError, "bounds must satisfy lo < hi"),
    ({"bounds": 1.0}, TypeError, "bounds must be a pair"),
    ({"generator": 3}, TypeError, "generator must be a torch.Generator"),
    ({"model_mode": "train"}, ValueError, "model_mode must be one of"),
]


@pytest.mark.parametrize(("change", "error", "message"), BAD_ARGUMENTS, ids=[m for *_, m in BAD_ARGUMENTS])
def test_pgd_rejects_bad_arguments(digits, change: dict, error: type, message: str) -> None:
    model, x, y = digits
    kwargs = {"eps": 0.1, **change}
    with pytest.raises(error, match=message):
        advfast.pgd(model, x[:8], y[:8], **kwargs)


BAD_DATA = [
    (lambda x, y: (x.long(), y), TypeError, "x must be float32"),
    (lambda x, y: (x[:0], y[:0]), ValueError, "x must be a non-empty batch"),
    (lambda x, y: (torch.where(x > 0.5, math.nan, x), y), ValueError, "x contains NaN or Inf"),
    (lambda x, y: (x * 2, y), ValueError, "x has values outside bounds"),
    (lambda x, y: (x, y[:4]), ValueError, "y must have shape \\[B\\]"),
    (lambda x, y: (x, y.float()), TypeError, "y must hold integer class indices"),
    (lambda x, y: (x, y.to("meta")), ValueError, "y must be on x's device"),
    (lambda x, y: (x, y + 10), ValueError, "y has labels outside \\[0, 10\\)"),
]


@pytest.mark.parametrize(("corrupt", "error", "message"), BAD_DATA, ids=[m for *_, m in BAD_DATA])
def test_pgd_rejects_bad_data(digits, corrupt, error: type, message: str) -> None:
    model, x, y = digits
    x, y = corrupt(x[:8], y[:8])
    with pytest.raises(error, match=message):
        advfast.pgd(model, x, y, eps=0.1)


def test_pgd_rejects_models_with_the_wrong_output(digits) -> None:
    _, x, y = digits
    with pytest.raises(ValueError, match="model must return logits of shape \\[B, C\\]"):
        advfast.pgd(lambda inputs: inputs.flatten(1).sum(1), x[:8], y[:8], eps=0.1)
    with pytest.raises(ValueError, match="loss must return one value per sample"):
        advfast.pgd(digits[0], x[:8], y[:8], eps=0.1, loss=lambda logits, labels: logits.sum())


# ---- inputs that used to fail deep inside torch (or return NaN) -------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.int8, torch.uint8])
def test_integer_labels_of_any_dtype_are_taken_as_int64(digits, dtype: torch.dtype) -> None:
    model, x, y = digits
    x, y = x[:16], y[:16]
    expected = advfast.pgd(model, x, y, eps=0.1, steps=3, generator=seeded())
    assert torch.equal(advfast.pgd(model, x, y.to(dtype), eps=0.1, steps=3, generator=seeded()), expected)


@pytest.mark.parametrize("random_start", [False, True])
def test_x_that_requires_grad_is_treated_as_data(digits, random_start: bool) -> None:
    model, x, y = digits
    x = x[:16]
    expected = advfast.pgd(model, x, y[:16], eps=0.1, steps=3, random_start=random_start, generator=seeded())
    leaf = x.clone().requires_grad_(True)
    x_adv = advfast.pgd(model, leaf, y[:16], eps=0.1, steps=3, random_start=random_start, generator=seeded())
    assert torch.equal(x_adv, expected)
    assert not x_adv.requires_grad and leaf.grad is None and leaf.requires_grad


def test_model_dtype_other_than_x_is_an_error_saying_what_to_do(digits) -> None:
    model, x, y = digits
    with pytest.raises(TypeError, match=r"x is torch.float64 but the model's parameters are torch.float32"):
        advfast.pgd(model, x[:8].double(), y[:8], eps=0.1)
    with pytest.raises(TypeError, match=r"model.to\(torch.float16\)"):
        advfast.fgsm(model, x[:8].half(), y[:8], eps=0.1)


def test_numpy_numbers_are_accepted_and_numpy_bools_are_not(digits) -> None:
    model, x, y = digits
    x, y = x[:16], y[:16]
    expected = advfast.pgd(model, x, y, eps=0.1, alpha=0.02, steps=3, restarts=2, generator=seeded())
    given = advfast.pgd(
        model,
        x,
        y,
        eps=np.float32(0.1),
        alpha=np.float64(0.02),
        steps=np.int64(3),
        restarts=np.int32(2),
        generator=seeded(),
    )
    torch.testing.assert_close(given, expected)  # np.float32(0.1) is not the double 0.1: equal up to that rounding
    for bad in ({"steps": np.True_}, {"steps": True}, {"eps": np.True_}):
        with pytest.raises((ValueError, TypeError), match=r"steps must be an integer|eps must be a float"):
            advfast.pgd(model, x, y, **{"eps": 0.1, **bad})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_eps_is_checked_in_the_dtype_the_attack_computes_in(digits, dtype: torch.dtype) -> None:
    """advfast.pgd(eps=1e40) returned all NaN: 1e40 is a finite double but overflows float32."""
    model, x, y = digits
    model = digits_cnn().to(dtype).eval() if dtype != torch.float32 else model
    x, y = x[:8].to(dtype), y[:8]
    for change in ({"eps": 1e40}, {"eps": torch.full((8,), 1e40, dtype=torch.float64)}, {"alpha": 1e40}):
        name = next(iter(change))
        with pytest.raises(ValueError, match=rf"{name} must be finite and [>=]+ 0 (for every sample, )?in float32"):
            advfast.pgd(model, x, y, **{"eps": 0.1, **change}, bounds=(-1e30, 1e30))
    with pytest.raises(ValueError, match=r"the default alpha \(2.5 \* eps\) is not finite"):
        advfast.pgd(model, x, y, eps=3e38, steps=1, bounds=(-1e30, 1e30))
