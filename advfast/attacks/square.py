"""The Square attack (Andriushchenko et al., 2020, "Square Attack: a query-efficient black-box adversarial
attack via random search"), L-inf and L2, as AutoAttack's reference code (fra31/auto-attack) runs it: gradient-
free, so it is the check on models whose gradients mislead the gradient attacks.

Random search on the margin loss ``m(x) = z_y - max_{j != y} z_j`` (the sample is misclassified when m <= 0),
over images [B, C, H, W] (D = C H W). Each query proposes a change inside a square window of side s and keeps
it where it lowers the margin. The window's area follows the reference's schedule of ``p`` (the fraction of
the image it covers, :func:`p_schedule`): ``s = round(sqrt(p D / C))``, at least 1 (L-inf) or an odd number
>= 3 (L2), at most min(H, W); its corner is uniform over ``{0, ..., H - s - 1} x {0, ..., W - s - 1}``.

- L-inf: start at ``x + eps * r`` with a random sign r per (sample, channel, column) (vertical stripes); a query
  sets the window to ``x + eps * r_c`` with a random sign per channel (the reference's "2 eps then project").
- L2: start from a 5 x 5 grid of "+/-" double-bump patterns with random signs, scaled to norm eps; a query
  moves the perturbation mass of a second window into a new double-bump pattern in the first one, keeping the
  norm at eps (the reference's update, step for step).

As in the reference, the window, its position and the L-inf signs are drawn once per query for the whole batch,
from ``generator`` in the reference's order, so a CPU generator seeded like its ``torch.manual_seed(seed)``
makes its draws and, but for ties between equal margins that a rounding can break either way, its decisions;
this also makes a sample's queries independent of which other samples are in the batch.
Compaction: a sample leaves at the query that misclassifies it. And an L-inf query whose answer a sample
already knows is not sent to the model for it: when its window already holds the proposal, or when it asked
about the same proposal (side, corner, signs) since its last accepted change and was refused then (the input
would be the same, so the answer would be). Late in the search, when changes are rare and the few hundred
positions of a small window repeat, this spares a third or more of the queries and changes no outcome.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import lru_cache

import torch
from torch import Tensor

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

P_INIT = 0.8  # the standard version's initial fraction of the image a window covers
NORM_TINY = 1e-12

# p_schedule: (last query index of a stage, divisor of p_init); past the last stage p_init / 512.
_P_STAGES = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))


def p_schedule(query: int, p_init: float = P_INIT) -> float:
    """The fraction of the image a window covers at query ``query`` (0-based), as AutoAttack's Square (whose
    schedule is not rescaled to the query budget) sets it: ``p_init`` up to query 10, then halved after queries
    10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000."""
    for last, divisor in _P_STAGES:
        if query <= last:
            return p_init / divisor
    return p_init / 512


def window_side(p: float, shape: tuple[int, int, int], norm: str) -> int:
    """The window's side for fraction ``p`` of an image of ``shape`` (C, H, W)."""
    c, h, w = shape
    side = round(math.sqrt(p * c * h * w / c))
    side = max(side, 1) if norm == "linf" else max(side, 3)
    if norm == "l2" and side % 2 == 0:
        side += 1
    return min(side, min(h, w))


def square(
    model: Model,
    x: Tensor,
    y: Tensor,
    *,
    eps: PerSample,
    norm: str = "linf",
    queries: int = 5000,
    p_init: float = P_INIT,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
    model_mode: ModelMode = "eval",
) -> Tensor:
    """Square attack on images x [B, C, H, W]: one query at the start point, then up to ``queries`` more per
    sample (the standard version: 5000, p_init 0.8), none for a sample misclassified on x.

    Args:
        model: maps x to logits [B, C]; queried without gradients; an ``nn.Module`` is left exactly as it was.
        x: clean images [B, C, H, W] inside ``bounds``; never modified. y: int labels [B].
        eps: radius, a float or a [B] tensor. norm: ``"linf"`` or ``"l2"``.
        queries: queries after the first. p_init: the first windows' fraction of the image, in (0, 1].
        bounds: valid input range. generator: for the random draws (torch's default when None).
        model_mode: ``"eval"`` or ``"as_is"`` as in :func:`advfast.pgd`.

    Returns:
        ``x_adv`` [B, C, H, W]: for a misclassified sample the input that misclassified it (x itself when x
        is), for the others the input of the lowest margin found; always inside the ball and the bounds.
    """
    lo, hi = check_inputs(x, y, bounds)
    if x.dim() != 4:
        raise ValueError(f"x must be images [B, C, H, W] for the Square attack, got shape {tuple(x.shape)}")
    eps = check_per_sample("eps", eps, x, positive=False)
    norm = check_norm(norm)
    queries = check_count("queries", queries)
    if isinstance(p_init, bool) or not isinstance(p_init, int | float) or not 0.0 < p_init <= 1.0:
        raise ValueError(f"p_init must be a number in (0, 1], got {p_init!r}")
    check_generator(generator, x)
    y = y.long()
    if norm == "l2" and min(x.shape[2:]) < 5:
        raise ValueError(f"x must be at least 5 x 5 pixels for the L2 Square attack, got shape {tuple(x.shape)}")
    search = _linf_search if norm == "linf" else _l2_search
    with preserved_model_state(model, model_mode), torch.no_grad():
        clean = model(x)
        check_logits(clean, y)
        x_adv = x.clone()
        todo = (clean.argmax(dim=1) == y).nonzero().squeeze(1)
        if todo.numel() > 0:
            search(model, x, y, eps, todo, queries, p_init, lo, hi, generator, x_adv)
    return x_adv


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """``z_y - max_{j != y} z_j`` per sample [B], in float32."""
    z = logits.float()
    z_y = z.gather(1, y.unsqueeze(1)).squeeze(1)
    others = z.scatter(1, y.unsqueeze(1), float("-inf"))
    return z_y - others.amax(dim=1)


@dataclass
class _State:
    """The samples still searched (every field indexed alike, compacted together)."""

    where: Tensor  # [b] positions in the caller's batch
    x: Tensor
    y: Tensor
    eps: Tensor | float  # [b, 1, 1, 1] or a float
    x_best: Tensor
    margin: Tensor  # [b], > 0 (still correctly classified)

    def keep(self, mask: Tensor) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                setattr(self, f.name, value[mask])

    def retire(self, x_adv_out: Tensor) -> None:
        """Misclassified samples leave with their input."""
        done = self.margin <= 0
        if bool(done.any()):
            x_adv_out[self.where[done]] = self.x_best[done]
            self.keep(~done)


def _radius(eps: PerSample, todo: Tensor) -> Tensor | float:
    return eps[todo].float().view(-1, 1, 1, 1) if isinstance(eps, Tensor) else eps


def _uniform(generator: torch.Generator | None, device: torch.device, *shape: int) -> Tensor:
    return torch.rand(shape, generator=generator, device=device)


def _random_sign(generator: torch.Generator | None, device: torch.device, *shape: int) -> Tensor:
    """sign(2u - 1), u uniform: the reference's ``random_choice``."""
    return torch.sign(2 * _uniform(generator, device, *shape) - 1)


def _corner(generator: torch.Generator | None, device: torch.device, free: int) -> int:
    """A corner in {0, ..., free - 1} (0 when free is 0), drawn as the reference's ``random_int(0, free)``."""
    return int((free * _uniform(generator, device, 1)).long().item())


def _linf_search(
    model: Model,
    x_all: Tensor,
    y_all: Tensor,
    eps: PerSample,
    todo: Tensor,
    queries: int,
    p_init: float,
    lo: float,
    hi: float,
    generator: torch.Generator | None,
    x_adv_out: Tensor,
) -> None:
    x, y = x_all[todo], y_all[todo]
    b, c, h, w = x.shape
    radius = _radius(eps, todo)
    stripes = _random_sign(generator, x.device, b, c, 1, w)
    x_best = torch.clamp(x + radius * stripes, lo, hi).to(x.dtype)
    s = _State(todo, x, y, radius, x_best, margin(model(x_best), y))
    s.retire(x_adv_out)
    # What each sample already knows: the query of its last accepted change (-1: the start), and per proposal
    # (side, corner, signs) the query at which it last asked about it. A proposal asked after the last change
    # was rejected then and would be again (same input, same model): it is not asked twice.
    changed_at = torch.full((x_all.shape[0],), -1, dtype=torch.int64)
    asked_at: dict[tuple, Tensor] = {}
    current_side = None
    for query in range(queries):
        if s.where.numel() == 0:
            return
        side = window_side(p_schedule(query, p_init), (c, h, w), "linf")
        if side != current_side:  # windows only shrink: the proposals of a larger side never come back
            asked_at.clear()
            current_side = side
        top = _corner(generator, x.device, h - side)
        left = _corner(generator, x.device, w - side)
        signs = _random_sign(generator, x.device, c, 1, 1)
        window = (slice(None), slice(None), slice(top, top + side), slice(left, left + side))
        old = s.x_best[window].clone()
        x_win = s.x[window]
        proposal = torch.clamp(
            torch.minimum(torch.maximum(old + 2.0 * s.eps * signs, x_win - s.eps), x_win + s.eps), lo, hi
        )
        where = s.where.cpu()
        ask = (proposal != old).flatten(1).any(dim=1).cpu()  # a window that already holds it: nothing to ask
        key = (top, left, *signs.flatten().tolist())
        history = asked_at.get(key)
        if history is None:
            history = asked_at[key] = torch.full_like(changed_at, -2)
        else:
            ask &= history[where] <= changed_at[where]
        history[where[ask]] = query
        if not bool(ask.any()):
            continue
        s.x_best[window] = proposal  # where nothing is asked this writes the same values or is undone below
        ask_here = ask.to(x.device)
        if bool(ask.all()):
            new_margin = margin(model(s.x_best), s.y)
        else:
            new_margin = s.margin.clone()
            new_margin[ask_here] = margin(model(s.x_best[ask_here]), s.y[ask_here])
        improved = (new_margin < s.margin) & ask_here
        s.x_best[window] = torch.where(improved.view(-1, 1, 1, 1), proposal, old)
        s.margin = torch.where(improved, new_margin, s.margin)
        changed_at[where[improved.cpu()]] = query
        s.retire(x_adv_out)
    x_adv_out[s.where] = s.x_best


# ---- L2 -------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _bumps(rows: int, cols: int) -> Tensor:
    """The reference's ``eta_rectangles``: nested rectangles around the centre, weight 1/(k+1)^2 for the k-th,
    summed, unit 2-norm; float32 on the CPU (cached; callers move a copy)."""
    delta = torch.zeros(rows, cols)
    top, left = rows // 2, cols // 2  # (x_c - 1, y_c - 1) in the reference
    for k in range(max(rows // 2 + 1, cols // 2 + 1)):
        delta[max(top, 0) : min(top + 2 * k + 1, rows), max(left, 0) : min(left + 2 * k + 1, cols)] += 1.0 / (
            torch.tensor([[k + 1.0]]) ** 2
        )
        top, left = top - 1, left - 1
    return delta / delta.square().sum().sqrt()


@lru_cache(maxsize=64)
def _double_bump(side: int) -> Tensor:
    """A +bump over the top half of a side x side window and a -bump over the bottom half, unit 2-norm."""
    delta = torch.zeros(side, side)
    delta[: side // 2] = _bumps(side // 2, side)
    delta[side // 2 :] = -_bumps(side - side // 2, side)
    return delta / delta.square().sum().sqrt()


def _pattern(side: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """The double bump, transposed with probability 1/2 (the reference's ``eta``), on ``device``."""
    delta = _double_bump(side).to(device)
    if _uniform(generator, device, 1).item() > 0.5:
        delta = delta.t()
    return delta


def _l2_norm(t: Tensor) -> Tensor:
    """Per-sample 2-norm as [b, 1, 1, 1]."""
    return t.square().flatten(1).sum(dim=1).sqrt().view(-1, 1, 1, 1)


def _l2_search(
    model: Model,
    x_all: Tensor,
    y_all: Tensor,
    eps: PerSample,
    todo: Tensor,
    queries: int,
    p_init: float,
    lo: float,
    hi: float,
    generator: torch.Generator | None,
    x_adv_out: Tensor,
) -> None:
    x, y = x_all[todo].float(), y_all[todo]
    b, c, h, w = x.shape
    radius = _radius(eps, todo)
    dev = x.device
    start = torch.zeros_like(x)
    cell = h // 5
    offset = (h - cell * 5) // 2
    for row in range(h // cell):
        for col in range(w // cell):
            top, left = offset + row * cell, offset + col * cell
            pattern = _pattern(cell, generator, dev).view(1, 1, cell, cell)
            start[:, :, top : top + cell, left : left + cell] += pattern * _random_sign(generator, dev, b, c, 1, 1)
    x_best = torch.clamp(x + start / (_l2_norm(start) + NORM_TINY) * radius, lo, hi)
    s = _State(todo, x, y, radius, x_best, margin(model(x_best.to(x_all.dtype)), y))
    s.retire(x_adv_out)
    for query in range(queries):
        if s.where.numel() == 0:
            return
        n = s.x.shape[0]
        delta = s.x_best - s.x
        side = window_side(p_schedule(query, p_init), (c, h, w), "l2")
        top, left = _corner(generator, dev, h - side), _corner(generator, dev, w - side)
        top2, left2 = _corner(generator, dev, h - side), _corner(generator, dev, w - side)
        first = (slice(None), slice(None), slice(top, top + side), slice(left, left + side))
        second = (slice(None), slice(None), slice(top2, top2 + side), slice(left2, left2 + side))
        norm_first = delta[first].square().sum(dim=(-2, -1), keepdim=True).sqrt()
        union = torch.zeros_like(delta)
        union[first] = 1.0
        union[second] = 1.0
        norm_union = (delta * union).square().sum(dim=(-2, -1), keepdim=True).sqrt()
        norm_image = _l2_norm(delta)
        moved = torch.ones(n, c, side, side, device=dev)
        moved *= _pattern(side, generator, dev).view(1, 1, side, side) * _random_sign(generator, dev, n, c, 1, 1)
        moved += delta[first] / (NORM_TINY + norm_first)
        budget = torch.clamp((s.eps * torch.ones_like(norm_image)) ** 2 - norm_image**2, min=0.0) / c + norm_union**2
        moved = moved / (NORM_TINY + moved.square().sum(dim=(-2, -1), keepdim=True).sqrt()) * budget.sqrt()
        delta[second] = 0.0
        delta[first] = moved
        x_new = torch.clamp(s.x + delta / (_l2_norm(delta) + NORM_TINY) * s.eps, lo, hi)
        new_margin = margin(model(x_new.to(x_all.dtype)), s.y)
        improved = new_margin < s.margin
        s.x_best = torch.where(improved.view(-1, 1, 1, 1), x_new, s.x_best)
        s.margin = torch.where(improved, new_margin, s.margin)
        s.retire(x_adv_out)
    x_adv_out[s.where] = s.x_best.to(x_adv_out.dtype)
