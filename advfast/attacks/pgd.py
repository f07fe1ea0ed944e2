"""Projected gradient descent (Madry et al., 2018), L-inf and L2, on advfast's fused step kernels."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from advfast import ops
from advfast.attacks.losses import LossFn, resolve_loss
from advfast.attacks.model_state import ModelMode, preserved_model_state
from advfast.attacks.step_size import pgd_alpha_scale
from advfast.attacks.validation import (
    PerSample,
    as_class_indices,
    check_generator,
    check_inputs,
    check_logits,
    check_model_dtype,
    check_norm,
    check_per_sample,
)
from advfast.checks import check_count

Model = Callable[[Tensor], Tensor]

_STEPS = {"linf": ops.linf_step_, "l2": ops.l2_step_}


def pgd(
    model: Model,
    x: Tensor,
    y: Tensor,
    *,
    eps: PerSample,
    alpha: PerSample | None = None,
    steps: int = 10,
    norm: str = "linf",
    random_start: bool = True,
    loss: str | LossFn = "ce",
    targeted: bool = False,
    restarts: int = 1,
    early_stop: bool = False,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
    model_mode: ModelMode = "eval",
) -> Tensor:
    """Adversarial examples by projected gradient ascent on the loss, within the eps-ball around x.

    Each step, per sample (``g`` = gradient of the loss w.r.t. the input; the loss is negated when targeted)::

        linf: x_adv <- clip(x + clip(x_adv + alpha * sign(g) - x, -eps, eps), lo, hi)
        l2:   d = x_adv + alpha * g / ||g|| - x;  x_adv <- clip(x + d * min(1, eps / ||d||), lo, hi)

    as one fused kernel after one forward and one input-gradient backward.

    Args:
        model: maps ``x`` [B, ...] to logits [B, C]; an ``nn.Module`` is left exactly as it was (train/eval
            flags, buffers, parameters' ``.grad``).
        x: clean inputs [B, ...] inside ``bounds``; never modified (if it requires grad, the attack works on
            ``x.detach()``: no gradient flows back into x). Its dtype must be the model's parameter dtype.
        y: integer labels [B] of any integer dtype (taken as int64; the target labels when ``targeted``).
        eps: radius, a real number or a [B] tensor, finite in the dtype the attack computes in (float32 for
            float32 and half x, float64 for float64). alpha: step size, default ``2.5 * eps / steps`` (Madry
            et al.: enough to cross the ball and back within the steps).
        steps: ascent steps per restart (a Python or numpy integer). norm: ``"linf"`` or ``"l2"``.
        random_start: start uniformly in the ball (else at x).
        loss: ``"ce"``, ``"cw"`` (margin) or a callable ``(logits, y) -> [B]`` to ascend.
        targeted: descend the loss of ``y`` instead of ascending it.
        restarts: random restarts; per sample the strongest result is kept (a success first, then the
            larger loss).
        early_stop: freeze a sample once it is misclassified (hits the target), by a per-sample mask on the
            device, with no host synchronisation; a frozen sample stays adversarial, so more restarts, or
            more steps of a fixed ``alpha``, never weaken the attack (with the default alpha, which shrinks
            as steps grow, more steps usually but not always help).
        bounds: valid input range ``(lo, hi)``. generator: for the random starts.
        model_mode: ``"eval"`` runs the model in eval mode; ``"as_is"`` in its current mode, with BatchNorm
            statistics saved and restored around the attack.

    Returns:
        ``x_adv``, detached, with x's shape, dtype and layout.
    """
    return attack(
        model,
        x,
        y,
        eps=eps,
        alpha=alpha,
        default_alpha_scale=None,
        steps=steps,
        norm=norm,
        random_start=random_start,
        loss=loss,
        targeted=targeted,
        restarts=restarts,
        early_stop=early_stop,
        bounds=bounds,
        generator=generator,
        model_mode=model_mode,
    )


def attack(
    model: Model,
    x: Tensor,
    y: Tensor,
    *,
    eps: PerSample,
    alpha: PerSample | None,
    default_alpha_scale: float | None,
    steps: int,
    norm: str,
    random_start: bool,
    loss: str | LossFn,
    targeted: bool,
    restarts: int,
    early_stop: bool,
    bounds: tuple[float, float],
    generator: torch.Generator | None,
    model_mode: ModelMode,
) -> Tensor:
    """The projected-gradient loop behind :func:`pgd` and :func:`advfast.fgsm`; alpha defaults to
    ``default_alpha_scale * eps``, or to Madry et al.'s ``2.5 * eps / steps`` when that is None."""
    lo, hi = check_inputs(x, y, bounds)
    x = x.detach()  # x is data here: the attack's gradients are taken w.r.t. its own copy, never through x
    y = as_class_indices(y)
    check_model_dtype(model, x)
    eps = check_per_sample("eps", eps, x, positive=False)
    steps = check_count("steps", steps)
    restarts = check_count("restarts", restarts)
    norm = check_norm(norm)
    if alpha is None:
        scale = pgd_alpha_scale(steps) if default_alpha_scale is None else default_alpha_scale
        alpha = eps * scale  # 0 where eps is 0: the kernels then leave x as it is
        try:
            check_per_sample("alpha", alpha, x, positive=False)
        except ValueError:
            raise ValueError(
                f"the default alpha ({scale:g} * eps) is not finite in the dtype the attack computes in: pass a "
                "smaller eps or an explicit alpha"
            ) from None
    else:
        alpha = check_per_sample("alpha", alpha, x, positive=True)
    loss_fn = resolve_loss(loss)
    check_generator(generator, x)
    if torch.is_inference_mode_enabled():
        raise RuntimeError("pgd needs autograd for the input gradient; call it outside torch.inference_mode()")
    step_ = _STEPS[norm]

    with preserved_model_state(model, model_mode), torch.enable_grad():
        best: Tensor | None = None
        best_success = best_score = None
        logits_checked = False
        for _ in range(restarts):
            x_adv = torch.empty_like(x)
            if random_start:
                ops.random_start_(x_adv, x, eps, norm, lo, hi, generator)
            else:
                x_adv.copy_(x)
            # Samples already fooled by an earlier restart stay frozen at their random start.
            done = best_success.clone() if early_stop and best_success is not None else None
            for _ in range(steps):
                grad, logits = input_gradient(model, loss_fn, x_adv, y, targeted, check=not logits_checked)
                logits_checked = True
                mask = None
                if early_stop:
                    hit = _success(logits, y, targeted)
                    done = hit if done is None else done | hit
                    mask = ~done
                step_(x_adv, grad, x, eps, alpha, lo, hi, mask)
            if restarts == 1:
                return x_adv
            success, score = _evaluate(model, loss_fn, x_adv, y, targeted)
            if best is None:
                best, best_success, best_score = x_adv, success, score
                continue
            better = (success & ~best_success) | ((success == best_success) & (score > best_score))
            best = torch.where(better.view(-1, *([1] * (x.dim() - 1))), x_adv, best)
            best_success = best_success | success
            best_score = torch.where(better, score, best_score)
        assert best is not None
        return best


def input_gradient(
    model: Model, loss_fn: LossFn, x_adv: Tensor, y: Tensor, targeted: bool, check: bool
) -> tuple[Tensor, Tensor]:
    """``(grad, logits)``: g = ∇_x Σ_b s·loss_fn(model(x_adv))_b with s = -1 when ``targeted``, else +1, taken
    w.r.t. the input only (parameters get no ``.grad``), and the detached logits. ``check`` validates the
    logits' shape and finiteness against ``y`` (once per attack is enough). A model whose output does not
    depend on its input through autograd gives a zero gradient."""
    x_in = x_adv.detach().requires_grad_(True)
    logits = model(x_in)
    if check:
        check_logits(logits, y)
    losses = _per_sample_loss(loss_fn, logits, y)
    objective = -losses if targeted else losses
    if not objective.requires_grad:
        # The model's output does not depend on its input through autograd (detached preprocessing, say):
        # the gradient is zero and the attack moves nothing (advfast.eval's sanity checks flag such models).
        return torch.zeros_like(x_in), logits.detach()
    (grad,) = torch.autograd.grad(objective.sum(), x_in, allow_unused=True)
    return (torch.zeros_like(x_in) if grad is None else grad), logits.detach()


def _per_sample_loss(loss_fn: LossFn, logits: Tensor, y: Tensor) -> Tensor:
    losses = loss_fn(logits, y)
    if not isinstance(losses, Tensor) or losses.shape != y.shape:
        shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
        raise ValueError(f"loss must return one value per sample, shape [{y.shape[0]}], got {shape}")
    return losses


def _success(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    predicted = logits.argmax(dim=1)
    return predicted == y if targeted else predicted != y


@torch.no_grad()
def _evaluate(model: Model, loss_fn: LossFn, x_adv: Tensor, y: Tensor, targeted: bool) -> tuple[Tensor, Tensor]:
    """Per sample: is x_adv a success, and its objective (higher is stronger)."""
    logits = model(x_adv)
    losses = _per_sample_loss(loss_fn, logits, y).float()
    return _success(logits, y, targeted), (-losses if targeted else losses)
