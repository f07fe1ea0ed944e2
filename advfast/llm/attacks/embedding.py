"""Embedding-space attack on a causal LM's prompt (Schwinn et al. 2024; the inner loop of CAT, Xhonneux et al.
2024): move the prompt's token embeddings so that the model, teacher-forced, writes a target response.

Per step, on ``x_adv`` ``[B, L, D]`` (the gathered prompt + target embeddings, moved so far)::

    CE_b   = mean over the target tokens of -log p(y_t | x_adv_b, y_<t)          (toward the target)
    g      = -dCE_b/dx_adv                                                       (autograd.grad; weights frozen)
    x_adv <- fused step on the [B*L, D] view: each token one sample, its mask selecting the movable tokens

with the step of the norm, each token of row b its own sample:

- ``l2-per-token``: ``d = x_adv + alpha*g/||g|| - x``, ``d <- d * min(1, eps/||d||)`` (advfast.ops.l2_step_);
  radius ``eps * mean_v ||W_v||_2`` (CAT's convention), step ``alpha * mean_v ||W_v||_2``;
- ``linf-per-token``: ``d = clip(x_adv + alpha*sign(g) - x, -eps, eps)`` (advfast.ops.linf_step_); radius
  ``eps * mean_v ||W_v||_inf``, step ``alpha * mean_v ||W_v||_inf``;
- ``unconstrained``: signed steps with no ball (Schwinn's attack); ``eps`` is None, step as for L-inf.

Bounds are (-inf, inf). The target tokens and padding never move (their mask is false). The columns before
the first movable token (the system prompt, say) never change, so their keys and values are computed once and
each step runs the model on the rest only. With ``suffix=n``
the attack appends ``n`` free embeddings to the user message (initialised from ``suffix_init``'s token) and
moves only those (the soft-suffix attack), in the same ball around their starting point. A row whose greedy
continuation starts with the target (every target token the argmax under teacher forcing) stops moving and
leaves the batch; success is then judged by greedy generation from the attacked prompt.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from advfast import ops
from advfast.checks import check_choice, check_count, check_real
from advfast.llm.chat import (
    REGIONS,
    SUFFIX,
    Batch,
    Message,
    as_conversation,
    context_length,
    encode_prompt,
    encode_text,
    make_batch,
    pad_id,
)
from advfast.llm.embeddings import embed, embedding_layer, row_scale
from advfast.llm.generation import greedy_generate, stop_ids
from advfast.llm.judge import judge_generations
from advfast.llm.kvcache import compute_prefix
from advfast.llm.losses import response_logits, score_response
from advfast.llm.state import frozen_for_attack

NORMS = ("l2-per-token", "linf-per-token", "unconstrained")
_UNBOUNDED = float(torch.finfo(torch.float32).max)  # a ball that never binds (the ops need a finite eps)


@dataclass
class EmbeddingAttackResult:
    """What an embedding attack did to each of ``n`` prompts.

    - ``success`` ``[n]``: the greedy generation from the attacked prompt carries the target (or the marker);
    - ``generations`` ``[n]``: those generations;
    - ``early_stopped`` ``[n]``: during the attack, the teacher-forced argmax spelt out the target;
    - ``steps`` ``[n]``: updates applied to each prompt;
    - ``losses`` ``[steps, n]``: the target's cross-entropy before each update (NaN once a prompt stopped);
    - ``x_adv`` / ``x``: per prompt, ``[L_i, D]``, the attacked and clean embeddings of the prompt tokens
      (with the soft suffix, if any); ``input_ids`` ``[L_i]`` and ``movable`` ``[L_i]`` (the tokens allowed
      to move) beside them;
    - ``radius``: the ball's radius in embedding units (None when unconstrained); ``step_size`` likewise.
    """

    success: list[bool]
    generations: list[str]
    early_stopped: list[bool]
    steps: list[int]
    losses: Tensor
    x_adv: list[Tensor]
    x: list[Tensor]
    input_ids: list[Tensor]
    movable: list[Tensor]
    radius: float | None
    step_size: float
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        return sum(self.success) / max(len(self.success), 1)


class EmbeddingAttack:
    """``EmbeddingAttack(model, tokenizer, eps=0.05, steps=50, norm="l2-per-token").run(prompts, targets)``.

    ``prompts``: strings (one user message each) or conversations (lists of ``{"role", "content"}`` ending with
    the user's turn), formatted by the tokenizer's chat template. ``targets``: the response each prompt should be
    made to produce. ``eps`` and ``alpha`` are relative to the mean row norm of the embedding table (see the
    module docstring); ``alpha`` defaults to ``2.5 * eps / steps`` (0.1 when unconstrained). ``region``:
    ``"user"`` moves the last user message only, ``"prompt"`` every prompt token (CAT's instruction). Prompts
    are attacked ``batch_size`` at a time; the columns before the first movable token go through the model once
    (``prefix_cache``: their keys and values are reused by every step). The model's weights, train/eval flags
    and ``requires_grad`` flags are as they were afterwards, and no parameter gets a ``.grad``.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        eps: float | None = 0.05,
        steps: int = 50,
        alpha: float | None = None,
        norm: str = "l2-per-token",
        suffix: int = 0,
        suffix_init: str = "!",
        region: str = "user",
        early_stop: bool = True,
        batch_size: int = 8,
        max_new_tokens: int = 32,
        freeze_weights: bool = True,
        prefix_cache: bool = True,
    ) -> None:
        check_choice("norm", norm, NORMS)
        if norm == "unconstrained":
            if eps is not None:
                raise ValueError(f"eps has no meaning for norm 'unconstrained' (no ball); pass eps=None, got {eps!r}")
        else:
            if eps is None:
                raise ValueError(f"eps must be a number >= 0 for norm {norm!r}, got None")
            eps = check_real("eps", eps, low=0.0)
        self.steps = check_count("steps", steps)
        if alpha is None:
            alpha = 0.1 if eps is None else 2.5 * eps / self.steps
        self.alpha = check_real("alpha", alpha, low=0.0)
        self.eps, self.norm = eps, norm
        self.suffix = check_count("suffix", suffix, minimum=0)
        self.region = check_choice("region", region, REGIONS)
        self.batch_size = check_count("batch_size", batch_size)
        self.max_new_tokens = check_count("max_new_tokens", max_new_tokens)
        self.early_stop, self.freeze_weights, self.prefix_cache = bool(early_stop), bool(freeze_weights), prefix_cache
        embedding_layer(model)  # a model without a token embedding table fails here, naming model
        self.model, self.tokenizer = model, tokenizer
        if self.suffix:
            init = encode_text(tokenizer, suffix_init)
            if not init:
                raise ValueError(f"suffix_init {suffix_init!r} tokenises to nothing")
            self.suffix_ids = (init[0],) * self.suffix
        scale = row_scale(model, "l2" if norm == "l2-per-token" else "linf")
        self.radius = None if eps is None else eps * scale
        self.step_size = self.alpha * scale

    def config(self) -> dict[str, Any]:
        return {
            "attack": "embedding",
            "eps": self.eps,
            "alpha": self.alpha,
            "steps": self.steps,
            "norm": self.norm,
            "suffix": self.suffix,
            "region": self.region,
            "early_stop": self.early_stop,
            "radius": self.radius,
            "step_size": self.step_size,
        }

    def run(
        self,
        prompts: Sequence[str | Sequence[Message]],
        targets: Sequence[str],
        *,
        markers: Sequence[str] | None = None,
    ) -> EmbeddingAttackResult:
        """Attack every prompt toward its target. Success: the generation contains ``markers[i]`` (case
        folded) when given, else it starts with ``targets[i]``."""
        conversations, targets = _check_inputs(prompts, targets, markers)
        started = time.perf_counter()
        parts = []
        for conversation in conversations:
            p = encode_prompt(self.tokenizer, conversation)
            parts.append(p.with_suffix(self.suffix_ids) if self.suffix else p)
        responses = [encode_text(self.tokenizer, t) for t in targets]
        for i, r in enumerate(responses):
            if not r:
                raise ValueError(f"targets[{i}] tokenises to nothing: give a non-empty target")
        pieces = []
        with frozen_for_attack(self.model, freeze=self.freeze_weights):
            for start in range(0, len(parts), self.batch_size):
                stop = start + self.batch_size
                pieces.append(self._attack_batch(parts[start:stop], responses[start:stop], start))
        generations = [g for piece in pieces for g in piece["generations"]]
        success = judge_generations(generations, targets, markers)
        return EmbeddingAttackResult(
            success=success,
            generations=generations,
            early_stopped=[s for piece in pieces for s in piece["stopped"]],
            steps=[s for piece in pieces for s in piece["steps"]],
            losses=torch.cat([piece["losses"] for piece in pieces], dim=1),
            x_adv=[t for piece in pieces for t in piece["x_adv"]],
            x=[t for piece in pieces for t in piece["x"]],
            input_ids=[t for piece in pieces for t in piece["input_ids"]],
            movable=[t for piece in pieces for t in piece["movable"]],
            radius=self.radius,
            step_size=self.step_size,
            seconds=time.perf_counter() - started,
            config=self.config(),
        )

    # ---- one batch --------------------------------------------------------------------------------------------

    def _attack_batch(self, parts: list, responses: list[list[int]], offset: int) -> dict[str, Any]:
        device = embedding_layer(self.model).weight.device
        try:
            batch = make_batch(parts, responses, pad=pad_id(self.tokenizer), max_length=context_length(self.model))
        except ValueError as exc:  # name the caller's index, not the batch's
            raise ValueError(_reindex(str(exc), offset)) from None
        batch = batch.to(device)
        x = embed(self.model, batch.input_ids)
        movable = (batch.segments == SUFFIX) if self.suffix else batch.perturb_mask(self.region)
        x_adv, losses, steps, stopped = self.perturb(x, batch, movable)
        p = batch.prompt_length
        prompt = batch.prompt_only()
        tokens = greedy_generate(
            self.model,
            x_adv[:, :p],
            prompt,
            max_new_tokens=self.max_new_tokens,
            stop=stop_ids(self.model, self.tokenizer),
        )
        real = prompt.attention_mask.bool()
        return {
            "generations": [self.tokenizer.decode(t, skip_special_tokens=True) for t in tokens],
            "losses": losses,
            "steps": steps.tolist(),
            "stopped": stopped.tolist(),
            "x_adv": [x_adv[i, :p][real[i]].detach().cpu() for i in range(len(batch))],
            "x": [x[i, :p][real[i]].cpu() for i in range(len(batch))],
            "input_ids": [prompt.input_ids[i][real[i]].cpu() for i in range(len(batch))],
            "movable": [movable[i, :p][real[i]].cpu() for i in range(len(batch))],
        }

    def perturb(self, x: Tensor, batch: Batch, movable: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The attack loop on one batch: ``x`` ``[B, L, D]`` clean embeddings, ``movable`` ``[B, L]``. Returns
        ``(x_adv, losses [steps, B], steps [B], stopped [B])``. Rows that stop leave the batch (compaction); the
        caller's model must already be frozen (see :func:`advfast.llm.state.frozen_for_attack`)."""
        b, _, dim = x.shape
        x_adv = x.clone()
        losses = torch.full((self.steps, b), math.nan)
        steps = torch.full((b,), self.steps, dtype=torch.long)
        stopped = torch.zeros(b, dtype=torch.bool)
        active = torch.arange(b, device=x.device)
        step_op = ops.l2_step_ if self.norm == "l2-per-token" else ops.linf_step_
        radius = _UNBOUNDED if self.radius is None else self.radius
        # Columns before the first movable token never change: their keys and values are computed once.
        start = fixed_columns(movable) if self.prefix_cache else 0
        prefix = None
        if start:
            prefix = compute_prefix(
                self.model,
                inputs_embeds=x[:, :start],
                attention_mask=batch.attention_mask[:, :start],
                position_ids=batch.position_ids[:, :start],
            )
        for step in range(self.steps):
            rows = batch.rows(active)
            xa = x_adv[active, start:].requires_grad_(True)
            logits = response_logits(self.model, xa, rows, prefix=prefix, rows=active)
            scores = score_response(logits, rows)
            (grad,) = torch.autograd.grad(scores.ce.sum(), xa)
            losses[step, active.cpu()] = scores.ce.detach().float().cpu()
            done = scores.matched if self.early_stop else torch.zeros_like(scores.matched)
            with torch.no_grad():
                xa = xa.detach()
                move = (movable[active, start:] & ~done[:, None]).reshape(-1)
                # Descend the target's loss: the ops ascend along the gradient they are given.
                step_op(
                    xa.view(-1, dim),
                    grad.neg_().view(-1, dim),
                    x[active, start:].reshape(-1, dim),
                    radius,
                    self.step_size,
                    -math.inf,
                    math.inf,
                    mask=move,
                )
                x_adv[active, start:] = xa
            if bool(done.any()):
                finished = active[done].cpu()
                stopped[finished] = True
                steps[finished] = step
                active = active[~done]
                if len(active) == 0:
                    break
        return x_adv, losses, steps, stopped


def fixed_columns(movable: Tensor) -> int:
    """How many leading columns of a batch no row may move (``movable`` ``[B, L]``)."""
    if not bool(movable.any()):
        return 0
    first = torch.where(movable.any(dim=0))[0][0]
    return int(first)


def _check_inputs(
    prompts: Sequence[Any], targets: Sequence[str], markers: Sequence[str] | None
) -> tuple[list, list[str]]:
    if isinstance(prompts, str) or isinstance(targets, str):
        raise TypeError("prompts and targets must be sequences (lists) of prompts and of target strings")
    if len(prompts) == 0:
        raise ValueError("prompts is empty: give at least one prompt")
    if len(targets) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets: give one target per prompt")
    if markers is not None and len(markers) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(markers)} markers: give one marker per prompt")
    for i, t in enumerate(targets):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"targets[{i}] is empty: give the response the attack should produce")
    conversations = [as_conversation(p, name=f"prompts[{i}]") for i, p in enumerate(prompts)]
    return conversations, list(targets)


def _reindex(message: str, offset: int) -> str:
    """``prompts[2]`` of a batch starting at ``offset`` is the caller's ``prompts[offset + 2]``."""
    import re

    return re.sub(r"(prompts|targets)\[(\d+)\]", lambda m: f"{m.group(1)}[{int(m.group(2)) + offset}]", message)
