"""Teacher-forced losses on a batch's response tokens, and CAT's toward / away losses.

For a row with response tokens ``y_1..y_n`` after the prompt ``p``, the model's next-token distribution at
each response position gives ``CE = -(1/n) sum_t log p(y_t | p, y_<t)`` (the mean over the row's real response
tokens). The toward loss pulls the model to a response (``CE``); the away loss pushes it from one (``-CE``),
floored as CAT does so that it cannot grow without bound once the response is unlikely.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advfast.llm.chat import Batch
from advfast.llm.kvcache import Prefix, cache_argument, underlying_model


@dataclass
class ResponseScores:
    """Per row: ``ce`` ``[B]`` (mean token cross-entropy of the response) and ``matched`` ``[B]`` bool (every
    response token is the argmax: the greedy continuation of the prompt starts with the response)."""

    ce: Tensor
    matched: Tensor


def _keeps_logits(model: nn.Module) -> bool:
    """Whether the underlying transformers model takes ``logits_to_keep``."""
    forward = getattr(underlying_model(model), "forward", None)
    try:
        return forward is not None and "logits_to_keep" in inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False


def response_logits(
    model: nn.Module, inputs_embeds: Tensor, batch: Batch, *, prefix: Prefix | None = None, rows: Tensor | None = None
) -> Tensor:
    """``[B, R, V]``: the logits that predict each response token (positions ``P-1 .. P+R-2``). Only the last
    ``R + 1`` positions go through the output layer where the model allows it (``logits_to_keep``).

    With ``prefix`` (the KV cache of the batch's first ``T`` columns, see :mod:`advfast.llm.kvcache`; ``rows``:
    which of its rows ``batch`` holds), ``inputs_embeds`` holds the remaining columns only."""
    r = batch.response_length
    if r == 0:
        raise ValueError("the batch has no response tokens to score")
    kwargs: dict[str, Any] = {}
    if _keeps_logits(model):
        kwargs["logits_to_keep"] = r + 1
    start = batch.input_ids.shape[1] - inputs_embeds.shape[1]
    if prefix is not None:
        kwargs.update(cache_argument(model, prefix, rows=rows), use_cache=True)
    elif start:
        raise ValueError(
            f"inputs_embeds covers {inputs_embeds.shape[1]} of {batch.input_ids.shape[1]} columns: give the prefix"
        )
    out = model(
        inputs_embeds=inputs_embeds,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids[:, start:],
        **{"use_cache": False, **kwargs},
    )
    logits = out.logits if hasattr(out, "logits") else out[0]
    return logits[:, -(r + 1) : -1]


def score_response(logits: Tensor, batch: Batch) -> ResponseScores:
    """Cross-entropy (in float32) and greedy match of ``batch``'s response under ``logits`` ``[B, R, V]``."""
    labels = batch.response_ids
    mask = batch.response_mask
    token_ce = F.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none")  # [B, R]
    counts = mask.sum(dim=1).clamp_min(1)
    ce = (token_ce * mask).sum(dim=1) / counts
    matched = ((logits.argmax(dim=-1) == labels) | ~mask).all(dim=1)
    return ResponseScores(ce, matched)


def toward_loss(ce: Tensor, cutoff: float = 0.0) -> Tensor:
    """CAT's toward loss per row: ``CE`` where ``CE >= cutoff``, else ``cutoff + 0.001 * CE`` (below the
    cutoff the row still gets a small gradient; cutoff 0 is the plain cross-entropy)."""
    return torch.where(ce >= cutoff, ce, cutoff + 0.001 * ce)


def away_loss(ce: Tensor, cutoff: float = -5.0) -> Tensor:
    """CAT's away loss per row, the negative cross-entropy floored at ``cutoff``: ``-CE`` where ``-CE >=
    cutoff``, else ``cutoff + 0.001 * (-CE)``. (CAT applies the floor to the batch's mean token loss; here it
    applies per row, so that one row already far from the target cannot hide another that is not, and the
    loss of a batch split over processes is the mean of the processes' losses.)"""
    negative = -ce
    return torch.where(negative >= cutoff, negative, cutoff + 0.001 * negative)
