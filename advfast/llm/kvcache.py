"""KV caches of a fixed prompt prefix, computed once and reused: by the embedding attack (the tokens before the
first movable one never change), by GCG (everything before the suffix) and by generation.

A cache is kept as plain ``(keys, values)`` tensors per layer (``[B, heads, T, head_dim]``); every forward gets
a fresh ``transformers`` cache built from them (a forward appends to the cache it is given, and the tensors
here must not change).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

Prefix = list[tuple[Tensor, Tensor]]


def underlying_model(model: nn.Module) -> nn.Module:
    """The transformers model under DDP's ``.module`` and peft's wrapper."""
    model = getattr(model, "module", model)
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def cache_keyword(model: nn.Module) -> str:
    """The forward argument that takes a KV cache: ``cache`` (transformers >= 5.24) or ``past_key_values``."""
    try:
        params = inspect.signature(underlying_model(model).forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out: Any) -> Any:
    """The KV cache a forward with ``use_cache=True`` returned (``out.cache``, formerly ``past_key_values``)."""
    for key in ("cache", "past_key_values"):
        if key in out:
            return out[key]
    raise ValueError("the model returned no KV cache (was it called with use_cache=True?)")


@torch.no_grad()
def compute_prefix(model: nn.Module, **inputs: Tensor) -> Prefix:
    """The per-layer keys and values of a forward over ``inputs`` (``input_ids`` or ``inputs_embeds``, with
    ``attention_mask`` / ``position_ids`` as the full sequence will have them)."""
    out = model(use_cache=True, **inputs)
    return [(layer.keys, layer.values) for layer in output_cache(out).layers]


def cache_argument(model: nn.Module, prefix: Prefix, *, rows: Tensor | None = None, repeat: int = 0) -> dict:
    """``{keyword: cache}`` for a forward continuing after ``prefix``: its ``rows`` only, or its single row
    repeated ``repeat`` times (expanded, not copied)."""
    from transformers import DynamicCache

    data = []
    for keys, values in prefix:
        if rows is not None:
            keys, values = keys[rows], values[rows]
        if repeat:
            keys, values = keys.expand(repeat, -1, -1, -1), values.expand(repeat, -1, -1, -1)
        data.append((keys, values))
    return {cache_keyword(model): DynamicCache(ddp_cache_data=data)}
