"""The input-embedding table of a causal LM, read without copying: the seam every embedding attack works at.

An attack gathers rows of the table (``W[ids]``: an index lookup, never a one-hot matmul over the vocabulary)
and feeds the model ``inputs_embeds``. Radii are relative to the table's typical row size (CAT's convention):
``radius = eps * mean_v ||W_v||`` in the row's own norm.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def embedding_layer(model: nn.Module) -> nn.Embedding:
    """``model.get_input_embeddings()``, or a ``TypeError`` naming ``model`` when it has none (a classifier
    head without token embeddings, a plain ``nn.Module``)."""
    getter = getattr(model, "get_input_embeddings", None)
    if getter is None:
        raise TypeError(
            f"model must be a transformers model with input embeddings (get_input_embeddings()); got "
            f"{type(model).__name__}"
        )
    try:
        layer = getter()
    except NotImplementedError:
        layer = None
    if not isinstance(layer, nn.Embedding):
        raise TypeError(
            f"model {type(model).__name__} has no token embedding table: get_input_embeddings() returned "
            f"{type(layer).__name__}"
        )
    return layer


def embedding_matrix(model: nn.Module) -> Tensor:
    """The ``[V, D]`` embedding table (the parameter itself, not a copy)."""
    return embedding_layer(model).weight


def embed(model: nn.Module, ids: Tensor) -> Tensor:
    """``W[ids]``: ``[..., D]`` rows of the table, detached (the attack's clean point ``x``)."""
    with torch.no_grad():
        return embedding_layer(model)(ids).detach()


def row_scale(model: nn.Module, norm: str) -> float:
    """The mean row norm of the table, ``mean_v ||W_v||_p`` with p = 2 for ``"l2"`` and p = inf for ``"linf"``,
    computed in float32: the unit in which ``eps`` and ``alpha`` are given."""
    weight = embedding_matrix(model).detach()
    with torch.no_grad():
        if norm == "l2":
            return torch.linalg.vector_norm(weight.float(), dim=1).mean().item()
        if norm == "linf":
            return weight.float().abs().amax(dim=1).mean().item()
    raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
