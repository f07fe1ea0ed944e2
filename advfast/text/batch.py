"""A tokenized batch, checked once, with what every adversary needs: the tokens that may move and the kwargs
of the model call.

A batch is the dict a tokenizer plus a collate gives (see :class:`advfast.data.text.TextCollate`):
``input_ids [B, L]`` (int), ``labels [B]`` (int, ``0..C-1``), and optionally ``attention_mask [B, L]``
(1 = real token; default all real), ``token_type_ids [B, L]`` and ``special_tokens_mask [B, L]`` (1 = special
token). Other keys are ignored. The caller's tensors are never modified.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


@dataclass(frozen=True)
class TextBatch:
    """``movable [B, L]`` (bool): tokens a perturbation may move (real tokens that are not special tokens).
    ``lengths [B]`` (float32): real tokens per sequence (sums of the attention mask). ``model_kwargs``: passed
    to the model beside ``inputs_embeds`` (attention mask, token types, and position ids for decoder-only
    models, which pool the last position and are padded on the left)."""

    input_ids: Tensor
    labels: Tensor
    attention_mask: Tensor
    movable: Tensor
    lengths: Tensor
    model_kwargs: dict[str, Tensor] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, index: Tensor) -> TextBatch:
        """The sub-batch of rows ``index`` ([n] int64)."""
        return replace(
            self,
            input_ids=self.input_ids[index],
            labels=self.labels[index],
            attention_mask=self.attention_mask[index],
            movable=self.movable[index],
            lengths=self.lengths[index],
            model_kwargs={k: v[index] for k, v in self.model_kwargs.items()},
        )


def _token_tensor(batch: Mapping[str, object], key: str, shape: tuple[int, ...], device: torch.device) -> Tensor:
    value = batch[key]
    if not isinstance(value, Tensor):
        raise TypeError(f"batch[{key!r}] must be a torch.Tensor, got {type(value).__name__}")
    if tuple(value.shape) != shape:
        raise ValueError(f"batch[{key!r}] must have the shape of input_ids {shape}, got {tuple(value.shape)}")
    if value.device != device:
        raise ValueError(f"batch[{key!r}] must be on the model's device ({device}), got {value.device}")
    return value


def prepare_batch(
    batch: Mapping[str, object],
    *,
    device: torch.device,
    special_token_ids: tuple[int, ...],
    num_classes: int | None,
    causal: bool,
    pass_position_ids: bool,
) -> TextBatch:
    """Check ``batch`` and derive the movable-token mask; one host synchronisation for the value checks.

    ``movable = attention_mask & ~special``, where ``special`` is the batch's ``special_tokens_mask`` when it
    has one, else ``input_ids`` in ``special_token_ids``. Labels must lie in ``[0, num_classes)``.
    """
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"batch must be a dict of tensors (input_ids, attention_mask, labels), got {type(batch).__name__}"
        )
    for key in ("input_ids", "labels"):
        if key not in batch:
            raise ValueError(f"batch must have {key!r} (keys found: {sorted(batch)})")
    input_ids = batch["input_ids"]
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.dtype not in INTEGER_DTYPES:
        what = (
            f"{input_ids.dtype} tensor of shape {tuple(input_ids.shape)}"
            if isinstance(input_ids, Tensor)
            else type(input_ids).__name__
        )
        raise ValueError(f"batch['input_ids'] must be an integer tensor [B, L], got a {what}")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"batch['input_ids'] must be non-empty, got shape {tuple(input_ids.shape)}")
    if input_ids.device != device:
        raise ValueError(f"batch['input_ids'] must be on the model's device ({device}), got {input_ids.device}")
    shape = tuple(input_ids.shape)
    labels = batch["labels"]
    if not isinstance(labels, Tensor) or labels.dtype not in INTEGER_DTYPES or tuple(labels.shape) != shape[:1]:
        what = (
            f"{labels.dtype} tensor of shape {tuple(labels.shape)}"
            if isinstance(labels, Tensor)
            else type(labels).__name__
        )
        raise ValueError(f"batch['labels'] must be integer class indices of shape [B] = [{shape[0]}], got a {what}")
    if labels.device != device:
        raise ValueError(f"batch['labels'] must be on the model's device ({device}), got {labels.device}")

    if batch.get("attention_mask") is not None:
        attention_mask = _token_tensor(batch, "attention_mask", shape, device)
    else:
        attention_mask = torch.ones(shape, dtype=torch.long, device=device)
    real = attention_mask != 0
    if batch.get("special_tokens_mask") is not None:
        special = _token_tensor(batch, "special_tokens_mask", shape, device) != 0
    elif special_token_ids:
        special = torch.isin(input_ids, torch.tensor(special_token_ids, dtype=input_ids.dtype, device=device))
    else:
        special = torch.zeros(shape, dtype=torch.bool, device=device)
    movable = real & ~special

    kwargs: dict[str, Tensor] = {"attention_mask": attention_mask}
    if batch.get("token_type_ids") is not None:
        kwargs["token_type_ids"] = _token_tensor(batch, "token_type_ids", shape, device)
    if causal and pass_position_ids:
        # Left padding: positions count from each sequence's first real token, as without padding.
        kwargs["position_ids"] = (real.long().cumsum(dim=1) - 1).clamp(min=0)

    checks = [labels.min() < 0]
    if num_classes is not None:
        checks.append(labels.max() >= num_classes)
    if causal:
        checks.append(~real[:, -1].all())
    flags = torch.stack(checks).tolist()
    if flags[0] or (num_classes is not None and flags[1]):
        raise ValueError(
            f"batch['labels'] has labels outside [0, {num_classes}) for a classifier with {num_classes} classes"
            if num_classes is not None
            else "batch['labels'] has negative labels"
        )
    if causal and flags[-1]:
        raise ValueError(
            "a decoder-only classifier pools the last position: pad its batches on the left "
            "(tokenizer.padding_side = 'left'; advfast.text.load_classifier does this)"
        )
    lengths = real.sum(dim=1, dtype=torch.float32)
    return TextBatch(input_ids.long(), labels.long(), attention_mask, movable, lengths, kwargs)


def check_labels(labels: Tensor, num_classes: int) -> None:
    """Every label indexes one of the ``num_classes`` outputs of the classifier's head."""
    if bool(((labels < 0) | (labels >= num_classes)).any()):
        raise ValueError(
            f"batch['labels'] has labels outside [0, {num_classes}) for a classifier with {num_classes} classes"
        )
