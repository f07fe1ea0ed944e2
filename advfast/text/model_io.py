"""How the text code talks to a classifier: its token-embedding module, and a forward pass from embeddings.

Any ``transformers`` sequence classifier works (BERT family, and decoder-only ones such as
GPT2ForSequenceClassification), and so does any module with the same two seams: ``get_input_embeddings()``
returning the token-embedding module (a gather ``[B, L] -> [B, L, D]``), and ``forward(inputs_embeds=...,
attention_mask=..., ...)`` returning logits ``[B, C]`` (or an object with ``.logits``). Nothing is patched and
no hook is registered.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable

import torch
from torch import Tensor, nn


def input_embeddings(model: object) -> nn.Module:
    """The model's token-embedding module; a clear TypeError for a model without one."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (a transformers classifier), got {type(model).__name__}")
    getter = getattr(model, "get_input_embeddings", None)
    if not callable(getter):
        raise TypeError(
            f"model ({type(model).__name__}) has no get_input_embeddings(): the text adversaries perturb the "
            "output of a transformers model's token-embedding module"
        )
    try:
        module = getter()
    except NotImplementedError:
        module = None
    weight = getattr(module, "weight", None)
    if not isinstance(module, nn.Module) or not isinstance(weight, Tensor) or weight.dim() != 2:
        raise TypeError(
            f"model.get_input_embeddings() must return the token-embedding module (with a [V, D] weight), "
            f"got {type(module).__name__}"
        )
    _check_accepts(model, "inputs_embeds")
    return module


def _forward_parameters(model: nn.Module) -> tuple[set[str], bool]:
    parameters = inspect.signature(model.forward).parameters.values()
    names = {p.name for p in parameters}
    var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    return names, var_keyword


def _check_accepts(model: nn.Module, name: str) -> None:
    names, var_keyword = _forward_parameters(model)
    if name not in names and not var_keyword:
        raise TypeError(f"model.forward must accept {name}= (as transformers models do)")


def accepts(model: nn.Module, name: str) -> bool:
    """Whether ``model.forward`` takes the keyword ``name`` by name."""
    names, _ = _forward_parameters(model)
    return name in names


def is_causal(model: nn.Module) -> bool:
    """A decoder-only model: one of its attention modules says ``is_causal`` (as transformers' do). Such a
    classifier pools the last position, so its batches must be padded on the left."""
    return any(getattr(m, "is_causal", False) is True for m in model.modules())


def logits_of(output: object) -> Tensor:
    """Logits from a model's output: a tensor, an object with ``.logits``, or a tuple led by them."""
    logits = getattr(output, "logits", None)
    if logits is None:
        logits = output[0] if isinstance(output, (tuple, list)) else output
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"model must return logits of shape [B, C], got {shape}")
    return logits


def special_token_ids_of(model: nn.Module, given: Iterable[int] | None) -> tuple[int, ...]:
    """Token ids that never move: ``given`` (e.g. ``tokenizer.all_special_ids``), else the pad, bos, eos, sep
    and cls ids the model's config names. A batch's own ``special_tokens_mask`` is used before either."""
    if given is not None:
        ids = tuple(int(i) for i in given)
    else:
        config = getattr(model, "config", None)
        names = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id")
        ids = tuple(
            int(v) for v in (getattr(config, n, None) for n in names) if isinstance(v, int) and not isinstance(v, bool)
        )
    return tuple(sorted(set(ids)))


def embedding_device(module: nn.Module) -> torch.device:
    return module.weight.device  # type: ignore[union-attr]
