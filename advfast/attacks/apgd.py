"""Auto-PGD (Croce & Hein, 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks"), L-inf and L2, scheduled as its reference code (fra31/auto-attack) schedules it, each
step one fused :func:`advfast.ops.apgd_step_`.

One run of ``steps`` iterations, per sample:

- start: ``x + eps * t / ||t||`` (L-inf: ``t ~ U[-1, 1]^D`` and the max-norm; L2: ``t ~ N(0, I)`` and the
  2-norm), clipped to the bounds; the step size starts at ``eta = 2 eps``;
- iteration i: ``z = P(x_adv + eta * s(g))``, ``x_adv <- P(x_adv + mu (z - x_adv) + (1 - mu)(x_adv - x_prev))``
  with ``mu = 1`` at i = 0 and 0.75 after (see :func:`advfast.ops.apgd_step_`), then the loss and gradient at
  the new point; the best point (highest loss) and its gradient are kept;
- checkpoints (:func:`checkpoints`): the first after ``max(int(0.22 N), 1)`` iterations, each next window
  ``max(int(0.03 N), 1)`` shorter, down to ``max(int(0.06 N), 1)``. At a checkpoint a sample's step size is
  halved when the loss rose in at most ``rho = 75%`` of the window's iterations, or when it was not halved at
  the last checkpoint and its best loss has not improved since; a halved sample restarts from its best point
  and that point's gradient. As in the reference, the first window also counts its first loss against 0.

Compaction: a sample leaves the batch at the first iteration at which it is misclassified (its adversarial
input is that iterate), and later restarts or targets run only on the samples not yet fooled, so the cost is
in proportion to what is still robust. Samples do not interact, so this changes no sample's outcome. The
random starts come from ``generator`` in the reference's order (one ``rand``/``randn`` of the batch still
robust per run), so a CPU generator seeded like the reference's ``torch.manual_seed(seed)`` draws its starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from advfast import ops
from advfast.attacks.dlr import dlr, dlr_targeted
from advfast.attacks.model_state import ModelMode, preserved_model_state
from advfast.attacks.validation import (
    PerSample,
    check_generator,
    check_inputs,
    check_logits,
    check_norm,
    check_per_sample,
)
from advfast.checks import check_count

Model = Callable[[Tensor], Tensor]
# (logits [b, C], y [b], target [b] or None) -> loss [b] (float32), ascended
RunLoss = Callable[[Tensor, Tensor, Tensor | None], Tensor]

RHO = 0.75  # halve the step when the loss rose in at most this fraction of a window's iterations
MOMENTUM = 0.75  # mu after the first iteration
INITIAL_STEP = 2.0  # eta_0 = 2 eps
NORM_TINY = 1e-12  # the reference's guard in x / (||x|| + tiny)

UNTARGETED_LOSSES = ("ce", "dlr")


def checkpoints(steps: int) -> list[int]:
    """The iterations (0-based) after which APGD checks its step size, for a run of ``steps`` iterations: with
    ``w_1 = max(int(0.22 N), 1)``, ``w_{j+1} = max(w_j - max(int(0.03 N), 1), max(int(0.06 N), 1))``, the
    checkpoints are ``w_1 - 1, w_1 + w_2 - 1, ...`` while they are below N. For N = 100: 21, 40, 56, 69, 79, 86,
    92, 98."""
    steps = check_count("steps", steps)
    window, shrink, least = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    found, done = [], 0
    while done + window <= steps:
        done += window
        found.append(done - 1)
        window = max(window - shrink, least)
    return found


def apgd(
    model: Model,
    x: Tensor,
    y: Tensor,
    *,
    eps: PerSample,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    loss: str = "ce",
    rho: float = RHO,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
    model_mode: ModelMode = "eval",
) -> Tensor:
    """APGD-CE (``loss="ce"``: cross-entropy) or APGD-DLR (``loss="dlr"``, :func:`advfast.attacks.dlr.dlr`),
    untargeted: ``restarts`` runs of ``steps`` iterations (module docstring), each on the samples not fooled yet.

    Args:
        model: maps x [B, ...] to logits [B, C]; an ``nn.Module`` is left exactly as it was.
        x: clean inputs [B, ...] inside ``bounds``; never modified. y: int labels [B].
        eps: radius, a float or a [B] tensor. norm: ``"linf"`` or ``"l2"``.
        steps: iterations per run (the standard version: 100). restarts: runs (standard: 1).
        rho: the fraction of loss increases under which a window halves the step (0 < rho <= 1).
        bounds: valid input range. generator: for the random starts (torch's default when None).
        model_mode: ``"eval"`` or ``"as_is"`` as in :func:`advfast.pgd`.

    Returns:
        ``x_adv`` [B, ...]: for a sample misclassified (already on x, or at some iteration), the first
        misclassified input found; for the others, the input of the highest loss of the last run.
    """
    if loss not in UNTARGETED_LOSSES:
        raise ValueError(f"loss must be one of {UNTARGETED_LOSSES}, got {loss!r}")
    run_loss = _ce if loss == "ce" else _dlr
    return _attack(model, x, y, eps, norm, steps, restarts, None, run_loss, rho, bounds, generator, model_mode)


def apgd_targeted(
    model: Model,
    x: Tensor,
    y: Tensor,
    *,
    eps: PerSample,
    norm: str = "linf",
    steps: int = 100,
    targets: int = 9,
    restarts: int = 1,
    rho: float = RHO,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
    model_mode: ModelMode = "eval",
) -> Tensor:
    """APGD-T: for k = 2, ..., targets + 1, ``restarts`` runs ascending the targeted DLR loss
    (:func:`advfast.attacks.dlr.dlr_targeted`) towards the class of the k-th largest clean logit, each on the
    samples not fooled yet. A sample counts as fooled when it is misclassified (into any class). The standard
    version: 9 targets, 100 steps, 1 restart. Needs ``targets <= C - 1`` and C >= 4.

    Arguments as in :func:`apgd`; returns ``x_adv`` [B, ...] (for a sample never fooled: the input of the
    highest loss of its last run).
    """
    targets = check_count("targets", targets)
    return _attack(model, x, y, eps, norm, steps, restarts, targets, _dlr_targeted, rho, bounds, generator, model_mode)


# ---- the loop -------------------------------------------------------------------------------------------------


def _ce(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")


def _dlr(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    return dlr(logits, y)


def _dlr_targeted(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    assert target is not None
    return dlr_targeted(logits, y, target)


def _attack(
    model: Model,
    x: Tensor,
    y: Tensor,
    eps: PerSample,
    norm: str,
    steps: int,
    restarts: int,
    targets: int | None,
    run_loss: RunLoss,
    rho: float,
    bounds: tuple[float, float],
    generator: torch.Generator | None,
    model_mode: ModelMode,
) -> Tensor:
    lo, hi = check_inputs(x, y, bounds)
    eps = check_per_sample("eps", eps, x, positive=False)
    norm = check_norm(norm)
    steps = check_count("steps", steps)
    restarts = check_count("restarts", restarts)
    if isinstance(rho, bool) or not isinstance(rho, int | float) or not 0.0 < rho <= 1.0:
        raise ValueError(f"rho must be a number in (0, 1], got {rho!r}")
    check_generator(generator, x)
    if torch.is_inference_mode_enabled():
        raise RuntimeError("apgd needs autograd for the input gradient; call it outside torch.inference_mode()")
    y = y.long()
    with preserved_model_state(model, model_mode):
        with torch.no_grad():
            clean_logits = model(x)
        classes = check_logits(clean_logits, y)
        needed = 4 if targets is not None else (3 if run_loss is _dlr else 2)
        if classes < needed:
            raise ValueError(f"model must have at least {needed} classes for this APGD loss, got {classes}")
        if targets is not None and targets > classes - 1:
            raise ValueError(f"targets must be at most C - 1 = {classes - 1}, got {targets}")
        x_adv = x.clone()
        fooled = clean_logits.argmax(dim=1) != y
        ranked = clean_logits.sort(dim=1).indices  # ascending: the k-th largest class is ranked[:, -k]
        for k in range(2, targets + 2) if targets is not None else [None]:
            for _ in range(restarts):
                todo = (~fooled).nonzero().squeeze(1)
                if todo.numel() == 0:
                    return x_adv
                target = None if k is None else ranked[todo, -k]
                _run(model, run_loss, x, y, eps, todo, target, norm, steps, rho, lo, hi, generator, x_adv, fooled)
    return x_adv


@dataclass
class _State:
    """The per-sample state of the samples still in a run (every field indexed alike, compacted together)."""

    where: Tensor  # [b] positions in the caller's batch
    x: Tensor
    y: Tensor
    target: Tensor | None
    eps: Tensor | None  # [b] per-sample radii, or None for a float eps
    x_adv: Tensor
    x_prev: Tensor
    grad: Tensor
    x_best: Tensor
    grad_best: Tensor
    loss_prev: Tensor  # the loss of the last iterate, [b] float32
    loss_best: Tensor
    loss_best_at_check: Tensor
    reduced_at_check: Tensor  # [b] bool
    increases: Tensor  # [b] int32, loss increases in the current window
    eta: Tensor  # [b] float32

    def keep(self, mask: Tensor) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                setattr(self, f.name, value[mask])


def _run(
    model: Model,
    run_loss: RunLoss,
    x_all: Tensor,
    y_all: Tensor,
    eps: PerSample,
    todo: Tensor,
    target: Tensor | None,
    norm: str,
    steps: int,
    rho: float,
    lo: float,
    hi: float,
    generator: torch.Generator | None,
    x_adv_out: Tensor,
    fooled_out: Tensor,
) -> None:
    """One run on the samples ``todo`` of the batch; writes their results into ``x_adv_out`` / ``fooled_out``."""
    x, y = x_all[todo], y_all[todo]
    eps_t = eps[todo] if isinstance(eps, Tensor) else None
    x_adv = _start(x, eps_t if eps_t is not None else eps, norm, lo, hi, generator)
    logits, loss, grad = _loss_and_grad(model, run_loss, x_adv, y, target)
    n = x.shape[0]
    # Step sizes in the dtype the op computes in (float64 for float64 inputs, else float32).
    eta_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if eps_t is not None:
        eta = (INITIAL_STEP * eps_t).to(eta_dtype)
    else:
        eta = torch.full((n,), INITIAL_STEP * eps, device=x.device, dtype=eta_dtype)
    # The reference counts the first iteration's loss against 0 (an unwritten slot of its loss history), except
    # when a single iteration makes the whole run: then against itself.
    loss_prev = torch.full_like(loss, float("inf") if steps == 1 else 0.0)
    s = _State(
        where=todo, x=x, y=y, target=target, eps=eps_t, x_adv=x_adv, x_prev=x_adv.clone(), grad=grad,
        x_best=x_adv.clone(), grad_best=grad.clone(), loss_prev=loss_prev, loss_best=loss.clone(),
        loss_best_at_check=loss.clone(), reduced_at_check=torch.ones_like(loss, dtype=torch.bool),
        increases=torch.zeros_like(loss, dtype=torch.int32), eta=eta,
    )  # fmt: skip
    loss = _retire(s, logits, loss, x_adv_out, fooled_out)
    at_check = set(checkpoints(steps))
    window, shrink, least = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    for i in range(steps):
        if s.where.numel() == 0:
            return
        radius = s.eps if s.eps is not None else eps
        ops.apgd_step_(s.x_adv, s.x_prev, s.grad, s.x, radius, s.eta, 1.0 if i == 0 else MOMENTUM, lo, hi, norm)
        logits, loss, s.grad = _loss_and_grad(model, run_loss, s.x_adv, s.y, s.target)
        loss = _retire(s, logits, loss, x_adv_out, fooled_out)
        s.increases += (loss > s.loss_prev).int()
        s.loss_prev = loss
        better = loss > s.loss_best
        s.x_best[better] = s.x_adv[better]
        s.grad_best[better] = s.grad[better]
        s.loss_best = torch.where(better, loss, s.loss_best)
        if i in at_check:
            halve = (s.increases <= window * rho) | (~s.reduced_at_check & (s.loss_best_at_check >= s.loss_best))
            s.reduced_at_check = halve
            s.loss_best_at_check = s.loss_best.clone()
            s.increases.zero_()
            s.eta = torch.where(halve, s.eta / 2, s.eta)
            s.x_adv[halve] = s.x_best[halve]
            s.grad[halve] = s.grad_best[halve]
            window = max(window - shrink, least)
    x_adv_out[s.where] = s.x_best


def _retire(s: _State, logits: Tensor, loss: Tensor, x_adv_out: Tensor, fooled_out: Tensor) -> Tensor:
    """Samples misclassified at their current iterate leave the run with it; returns the loss of those left."""
    hit = logits.argmax(dim=1) != s.y
    if not bool(hit.any()):
        return loss
    x_adv_out[s.where[hit]] = s.x_adv[hit]
    fooled_out[s.where[hit]] = True
    s.keep(~hit)
    return loss[~hit]


def _start(x: Tensor, eps: PerSample, norm: str, lo: float, hi: float, generator: torch.Generator | None) -> Tensor:
    """``clip(x + eps * t / ||t||, lo, hi)``: t uniform in [-1, 1] and the max-norm (L-inf), t Gaussian and the
    2-norm (L2), drawn as the reference draws them (float32, the batch's shape)."""
    if norm == "linf":
        t = 2 * torch.rand(x.shape, generator=generator, device=x.device) - 1
        size = t.abs().flatten(1).amax(dim=1)
    else:
        t = torch.randn(x.shape, generator=generator, device=x.device)
        size = t.square().flatten(1).sum(dim=1).sqrt()
    column = (1, *([1] * (x.dim() - 1)))
    radius = eps.float().view(-1, *column[1:]) if isinstance(eps, Tensor) else eps
    direction = t / (size.view(-1, *column[1:]) + NORM_TINY)
    return torch.clamp(x + (radius * torch.ones_like(t)) * direction, lo, hi).to(x.dtype)


def _loss_and_grad(
    model: Model, run_loss: RunLoss, x_adv: Tensor, y: Tensor, target: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Detached logits [b, C], per-sample losses [b] (float32) and the input gradient of their sum."""
    x_in = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x_in)
        losses = run_loss(logits, y, target)
    if not losses.requires_grad:  # the output does not depend on the input through autograd
        return logits.detach(), losses.detach(), torch.zeros_like(x_in)
    (grad,) = torch.autograd.grad(losses.sum(), x_in, allow_unused=True)
    return logits.detach(), losses.detach(), torch.zeros_like(x_in) if grad is None else grad
