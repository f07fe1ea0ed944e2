"""Greedy generation from (possibly perturbed) prompt embeddings, batched with left padding and a KV cache.

Attack success is judged here, on what the model actually writes, not on the attack's loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from advfast.llm.chat import Batch
from advfast.llm.kvcache import cache_keyword, output_cache
from advfast.llm.losses import _keeps_logits


def stop_ids(model: nn.Module, tokenizer: Any) -> set[int]:
    """Token ids that end a turn: the tokenizer's eos and the generation config's eos id(s)."""
    ids: set[int] = set()
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    config = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(config, int):
        ids.add(config)
    elif isinstance(config, Sequence):
        ids.update(int(i) for i in config)
    return ids


@torch.no_grad()
def greedy_generate(
    model: nn.Module, inputs_embeds: Tensor, batch: Batch, *, max_new_tokens: int, stop: set[int]
) -> list[list[int]]:
    """Greedy continuations of the prompts ``inputs_embeds`` ``[B, P, D]`` (left-padded as ``batch``, which
    holds only prompt columns): each row's new token ids, up to ``max_new_tokens``, cut before a stop id."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    attention = batch.attention_mask
    positions = batch.position_ids
    keyword = cache_keyword(model)
    first = {"logits_to_keep": 1} if _keeps_logits(model) else {}
    out = model(inputs_embeds=inputs_embeds, attention_mask=attention, position_ids=positions, use_cache=True, **first)
    rows = inputs_embeds.shape[0]
    tokens: list[list[int]] = [[] for _ in range(rows)]
    done = torch.zeros(rows, dtype=torch.bool, device=inputs_embeds.device)
    stop_tensor = torch.tensor(sorted(stop), dtype=torch.long, device=inputs_embeds.device)
    next_position = positions[:, -1:] + 1
    for step in range(max_new_tokens):
        next_ids = out.logits[:, -1].argmax(dim=-1)
        done |= torch.isin(next_ids, stop_tensor)
        for row, token in enumerate(next_ids.tolist()):
            if not done[row]:
                tokens[row].append(token)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
        out = model(
            input_ids=next_ids[:, None],
            attention_mask=attention,
            position_ids=next_position,
            use_cache=True,
            **{keyword: output_cache(out)},
        )
        next_position = next_position + 1
    return tokens
