"""Conversations to token ids through the tokenizer's chat template, and batches of them laid out for attacks,
teacher forcing and generation alike.

A prompt is split into segments, each tokenised on its own (as GCG does): the template text before the last
user message, the user message, an optional suffix (GCG's tokens, the soft-suffix attack's free embeddings),
and the template text after it up to the start of the assistant's turn. A response follows the prompt.

A batch puts every prompt left-padded to one length ``P`` and every response right-padded after it, so that
the prompt occupies columns ``[0, P)`` in every row, whatever the response. The same prompts with another
response (CAT's safe and unsafe targets) then share the prompt's columns, the prompt alone (``[:, :P]``) is
ready for generation, and the logits that score the response are the last ``R + 1`` positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

Message = dict[str, str]
Conversation = list[Message]

# Segment codes of each column in a batch.
PAD, BEFORE, USER, SUFFIX, AFTER, RESPONSE = range(6)
REGIONS = ("user", "prompt")
_SLOT = "\u2063ADVFAST-USER-TURN\u2063"  # stands in for the last user message while the template renders


@dataclass(frozen=True)
class PromptParts:
    """One prompt's token ids by segment (``suffix`` is empty unless an attack inserts one)."""

    before: tuple[int, ...]
    user: tuple[int, ...]
    after: tuple[int, ...]
    suffix: tuple[int, ...] = ()

    @property
    def ids(self) -> list[int]:
        return [*self.before, *self.user, *self.suffix, *self.after]

    def with_suffix(self, suffix: Sequence[int]) -> PromptParts:
        return PromptParts(self.before, self.user, self.after, tuple(int(t) for t in suffix))


def as_conversation(prompt: str | Sequence[Message], name: str = "prompts") -> Conversation:
    """A string is one user message; a conversation must end with a non-empty user message."""
    if isinstance(prompt, str):
        messages: Conversation = [{"role": "user", "content": prompt}]
    else:
        messages = [dict(m) for m in prompt]
    if not messages:
        raise ValueError(f"{name}: a prompt is an empty conversation")
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"{name}: every message must be a dict with 'role' and 'content', got {m!r}")
    last = messages[-1]
    if last["role"] != "user":
        raise ValueError(f"{name}: a prompt must end with a user message (the attacked turn), got {last['role']!r}")
    if not isinstance(last["content"], str) or not last["content"].strip():
        raise ValueError(f"{name}: the last user message is empty")
    return messages


def render_parts(tokenizer: Any, messages: Conversation) -> tuple[str, str, str]:
    """``(before, user, after)`` as text: the template rendered around the last user message, which must
    appear in it verbatim (a template that rewrites the message cannot be attacked token by token)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("tokenizer has no chat template (tokenizer.chat_template is empty): set one first")
    user = messages[-1]["content"]
    slotted = [*messages[:-1], {**messages[-1], "content": _SLOT}]
    text = tokenizer.apply_chat_template(slotted, tokenize=False, add_generation_prompt=True)
    if text.count(_SLOT) != 1:
        raise ValueError("the tokenizer's chat template changes the user's message; cannot locate the user turn")
    before, after = text.split(_SLOT)
    return before, user, after


def encode_prompt(tokenizer: Any, prompt: str | Sequence[Message]) -> PromptParts:
    """A prompt's segments as token ids (special tokens come from the template text itself)."""
    before, user, after = render_parts(tokenizer, as_conversation(prompt))
    return PromptParts(
        tuple(encode_text(tokenizer, before)), tuple(encode_text(tokenizer, user)), tuple(encode_text(tokenizer, after))
    )


def encode_text(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def end_of_turn(tokenizer: Any) -> list[int]:
    """The ids the template puts after an assistant message (``<|im_end|>`` and a newline, say), found by
    rendering a one-turn conversation: appended to training responses so the model learns to stop."""
    probe = "ok"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": probe}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    tail = text[text.rfind(probe) + len(probe) :]
    ids = encode_text(tokenizer, tail.rstrip("\n")) if tail.strip() else []
    if not ids and tokenizer.eos_token_id is not None:
        ids = [tokenizer.eos_token_id]
    return ids


def pad_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


@dataclass
class Batch:
    """``B`` rows of prompt + response. Tensors are ``[B, P + R]`` unless said otherwise.

    - ``input_ids``; ``attention_mask`` (1 on real tokens); ``position_ids`` (0 at each row's first real token);
    - ``segments``: the segment code of every column (PAD, BEFORE, USER, SUFFIX, AFTER, RESPONSE);
    - ``prompt_length`` ``P`` and ``response_length`` ``R``.
    """

    input_ids: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    segments: Tensor
    prompt_length: int
    response_length: int

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def response_mask(self) -> Tensor:
        """``[B, R]``: the real response tokens (the ones a loss scores)."""
        return self.segments[:, self.prompt_length :] == RESPONSE

    @property
    def response_ids(self) -> Tensor:
        return self.input_ids[:, self.prompt_length :]

    def perturb_mask(self, region: str = "user") -> Tensor:
        """``[B, P + R]`` bool: the columns an attack may move. ``"user"``: the last user message and any
        suffix; ``"prompt"``: every prompt token (CAT's "instruction"). Padding and the response never move."""
        if region == "user":
            return (self.segments == USER) | (self.segments == SUFFIX)
        if region == "prompt":
            return (self.segments != PAD) & (self.segments != RESPONSE)
        raise ValueError(f"region must be one of {list(REGIONS)}, got {region!r}")

    def rows(self, index: Tensor) -> Batch:
        return Batch(
            self.input_ids[index],
            self.attention_mask[index],
            self.position_ids[index],
            self.segments[index],
            self.prompt_length,
            self.response_length,
        )

    def prompt_only(self) -> Batch:
        """The prompt columns alone (left-padded, for generation)."""
        p = self.prompt_length
        return Batch(
            self.input_ids[:, :p], self.attention_mask[:, :p], self.position_ids[:, :p], self.segments[:, :p], p, 0
        )

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.position_ids.to(device),
            self.segments.to(device),
            self.prompt_length,
            self.response_length,
        )


def make_batch(
    prompts: Sequence[PromptParts],
    responses: Sequence[Sequence[int]] | None,
    *,
    pad: int,
    max_length: int | None = None,
) -> Batch:
    """Lay ``prompts`` (left-padded) and ``responses`` (right-padded) out as a :class:`Batch`. A row longer
    than ``max_length`` (the model's context) is an error naming the row."""
    if len(prompts) == 0:
        raise ValueError("prompts is empty: nothing to batch")
    if responses is not None and len(responses) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses (targets): give one per prompt")
    rows = []
    for i, parts in enumerate(prompts):
        segs = [BEFORE] * len(parts.before) + [USER] * len(parts.user) + [SUFFIX] * len(parts.suffix)
        segs += [AFTER] * len(parts.after)
        response = list(responses[i]) if responses is not None else []
        if responses is not None and not response:
            raise ValueError(f"targets[{i}] tokenises to nothing: give a non-empty target")
        total = len(segs) + len(response)
        if max_length is not None and total > max_length:
            raise ValueError(
                f"targets[{i}]: prompts[{i}] with its target is {total} tokens, more than the model's context of "
                f"{max_length}"
            )
        rows.append((parts.ids, segs, response))
    p = max(len(ids) for ids, _, _ in rows)
    r = max(len(resp) for _, _, resp in rows)
    b = len(rows)
    input_ids = torch.full((b, p + r), pad, dtype=torch.long)
    segments = torch.full((b, p + r), PAD, dtype=torch.long)
    for i, (ids, segs, resp) in enumerate(rows):
        input_ids[i, p - len(ids) : p] = torch.tensor(ids, dtype=torch.long)
        segments[i, p - len(ids) : p] = torch.tensor(segs, dtype=torch.long)
        if resp:
            input_ids[i, p : p + len(resp)] = torch.tensor(resp, dtype=torch.long)
            segments[i, p : p + len(resp)] = RESPONSE
    attention_mask = (segments != PAD).long()
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp_min(0)
    return Batch(input_ids, attention_mask, position_ids, segments, p, r)


def context_length(model: Any) -> int | None:
    """The model's maximum sequence length, where its config says (``max_position_embeddings``, ``n_positions``)."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
