"""Greedy Coordinate Gradient (Zou et al. 2023): a discrete suffix appended to the user's message, searched
token by token so the model writes a target. It attacks what a real user can send (text), so it is the
evaluation that matters in the real world.

Per step, for the suffix ``s`` (``n`` token ids) of one prompt:

1. token gradient: with ``e = W[s]`` (gathered) and ``L`` the target's cross-entropy, ``G = dL/de @ W^T``
   ``[n, V]`` is the gradient with respect to the one-hot suffix (``dL/d onehot_iv = <dL/de_i, W_v>``);
2. candidates: ``search_width`` copies of ``s``, each with one random position set to one of that position's
   ``topk`` tokens of lowest ``G`` (special and, unless allowed, non-ASCII tokens excluded); duplicates and
   candidates that do not re-tokenise to themselves (decode, then encode, gives other ids) are dropped;
3. evaluation: every candidate's loss in batches of ``batch_size``, reusing the KV cache of the prompt up to
   the suffix (computed once), so each candidate costs only ``n + |after| + |target|`` positions;
4. the best candidate becomes ``s``; the search stops early once its greedy continuation starts with the target.

Success is judged by greedy generation from the final text (user message + suffix) re-tokenised through the
chat template, as a user would send it. Weights are frozen throughout.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advfast.checks import check_count
from advfast.llm.attacks.embedding import _check_inputs
from advfast.llm.chat import Message, PromptParts, context_length, encode_prompt, encode_text, make_batch, pad_id
from advfast.llm.embeddings import embed, embedding_layer
from advfast.llm.generation import greedy_generate, stop_ids
from advfast.llm.judge import judge_generations
from advfast.llm.kvcache import cache_argument, compute_prefix
from advfast.llm.losses import _keeps_logits
from advfast.llm.state import frozen_for_attack


@dataclass
class GCGResult:
    """Per prompt: ``success`` (judged on the generation from the re-tokenised text), ``generations``,
    ``suffixes`` (the final suffix text), ``best_losses``, ``losses`` (the chosen candidate's loss per step),
    ``steps`` (steps run), ``early_stopped``, ``retokenizes`` (the prompt text with its suffix tokenises back
    to the ids that were optimised). ``budgets``: for each smaller step budget asked for, the same judged on
    the best suffix found within that many steps (``{"success", "generations", "suffixes"}``), so one search
    measures several budgets."""

    success: list[bool]
    generations: list[str]
    suffixes: list[str]
    best_losses: list[float]
    losses: list[list[float]]
    steps: list[int]
    early_stopped: list[bool]
    retokenizes: list[bool]
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    budgets: dict[int, dict[str, list]] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        return sum(self.success) / max(len(self.success), 1)


@dataclass
class _Problem:
    """One prompt's fixed parts: the KV cache of everything before the suffix and the embeddings after it."""

    parts: PromptParts
    cache: list[tuple[Tensor, Tensor]]
    prefix_length: int
    after: Tensor  # [La, D]
    target_ids: Tensor  # [T]
    target: Tensor  # [T, D]


class GCG:
    """``GCG(model, tokenizer, steps=100).run(prompts, targets)``: one suffix per prompt (see the module
    docstring). ``suffix_init``'s tokens start the search (their count is the suffix length)."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        steps: int = 100,
        suffix_init: str = " x x x x x x x x x x",
        search_width: int = 64,
        topk: int = 64,
        batch_size: int = 64,
        filter_retokenized: bool = True,
        allow_non_ascii: bool = False,
        early_stop: bool = True,
        max_new_tokens: int = 32,
        seed: int = 0,
    ) -> None:
        self.steps = check_count("steps", steps)
        self.search_width = check_count("search_width", search_width)
        self.topk = check_count("topk", topk)
        self.batch_size = check_count("batch_size", batch_size)
        self.max_new_tokens = check_count("max_new_tokens", max_new_tokens)
        self.seed = check_count("seed", seed, minimum=0)
        self.filter_retokenized, self.allow_non_ascii, self.early_stop = filter_retokenized, allow_non_ascii, early_stop
        embedding_layer(model)
        self.model, self.tokenizer = model, tokenizer
        self.suffix_init = tuple(encode_text(tokenizer, suffix_init))
        if not self.suffix_init:
            raise ValueError(f"suffix_init {suffix_init!r} tokenises to nothing")
        self._not_allowed: Tensor | None = None

    def config(self) -> dict[str, Any]:
        return {
            "attack": "gcg",
            "steps": self.steps,
            "suffix_length": len(self.suffix_init),
            "search_width": self.search_width,
            "topk": self.topk,
            "seed": self.seed,
        }

    # ---- the search -------------------------------------------------------------------------------------------

    def run(
        self,
        prompts: Sequence[str | Sequence[Message]],
        targets: Sequence[str],
        *,
        markers: Sequence[str] | None = None,
        budgets: Sequence[int] = (),
    ) -> GCGResult:
        """Search a suffix for every prompt (see the module docstring); ``budgets``: smaller step counts to
        judge as well, from the best suffix found within each."""
        conversations, targets = _check_inputs(prompts, targets, markers)
        budgets = sorted({check_count("budgets", b) for b in budgets if b != self.steps})
        if budgets and budgets[-1] > self.steps:
            raise ValueError(f"budgets must be <= steps ({self.steps}), got {budgets[-1]}")
        started = time.perf_counter()
        found = []
        by_budget: dict[int, dict[str, list]] = {}
        with frozen_for_attack(self.model):
            for i, (conversation, target) in enumerate(zip(conversations, targets, strict=True)):
                found.append(self._search(conversation, target, i, budgets))
            texts = [self.suffixed(c, f["suffix"]) for c, f in zip(conversations, found, strict=True)]
            generations, retokenizes = self._generate(texts, [f["ids"] for f in found])
            for budget in budgets:
                suffixes = [f["snapshots"][budget] for f in found]
                texts = [self.suffixed(c, sfx) for c, sfx in zip(conversations, suffixes, strict=True)]
                gens, _ = self._generate(texts, [[] for _ in texts])
                by_budget[budget] = {
                    "success": judge_generations(gens, targets, markers),
                    "generations": gens,
                    "suffixes": [self.tokenizer.decode(sfx) for sfx in suffixes],
                }
        success = judge_generations(generations, targets, markers)
        return GCGResult(
            success=success,
            generations=generations,
            suffixes=[self.tokenizer.decode(f["suffix"]) for f in found],
            best_losses=[f["best"] for f in found],
            losses=[f["losses"] for f in found],
            steps=[f["steps"] for f in found],
            early_stopped=[f["stopped"] for f in found],
            retokenizes=retokenizes,
            seconds=time.perf_counter() - started,
            config=self.config(),
            budgets=by_budget,
        )

    def _search(self, conversation: list[Message], target: str, index: int, budgets: Sequence[int] = ()) -> dict:
        target_ids = encode_text(self.tokenizer, target)
        if not target_ids:
            raise ValueError(f"targets[{index}] tokenises to nothing: give a non-empty target")
        parts = encode_prompt(self.tokenizer, conversation)
        total = len(parts.ids) + len(self.suffix_init) + len(target_ids)
        limit = context_length(self.model)
        if limit is not None and total > limit:
            raise ValueError(
                f"targets[{index}]: prompts[{index}] with its suffix and target is {total} tokens, more than the "
                f"model's context of {limit}"
            )
        problem = self.prepare(parts, target_ids)
        generator = torch.Generator().manual_seed(self.seed + index)
        suffix = torch.tensor(self.suffix_init, dtype=torch.long, device=problem.target.device)
        losses: list[float] = []
        best, best_suffix, stopped, steps = float("inf"), suffix, False, 0
        snapshots: dict[int, list[int]] = {}
        for steps in range(1, self.steps + 1):
            candidates = self.candidates(problem, suffix, generator)
            if len(candidates):
                loss, matched = self.candidate_losses(problem, candidates)
                pick = int(loss.argmin())
                suffix = candidates[pick]
                losses.append(float(loss[pick]))
                if losses[-1] < best:
                    best, best_suffix = losses[-1], suffix
                stopped = self.early_stop and bool(matched[pick])
                if stopped:
                    best, best_suffix = losses[-1], suffix
            else:  # every candidate was filtered out: the suffix stays
                losses.append(losses[-1] if losses else float("nan"))
            if steps in budgets:
                snapshots[steps] = best_suffix.tolist()
            if stopped:
                break
        for budget in budgets:  # a search that stopped early has its answer for every later budget
            snapshots.setdefault(budget, best_suffix.tolist())
        ids = [*parts.before, *parts.user, *best_suffix.tolist(), *parts.after]
        return {
            "suffix": best_suffix.tolist(),
            "ids": ids,
            "best": best,
            "losses": losses,
            "steps": steps,
            "stopped": stopped,
            "snapshots": snapshots,
        }

    def prepare(self, parts: PromptParts, target_ids: Sequence[int]) -> _Problem:
        """The prompt's prefix (template + user message) through the model once, kept as a KV cache."""
        device = embedding_layer(self.model).weight.device
        prefix = torch.tensor([[*parts.before, *parts.user]], dtype=torch.long, device=device)
        cache = compute_prefix(self.model, input_ids=prefix)
        after = embed(self.model, torch.tensor(parts.after, dtype=torch.long, device=device))
        target_tensor = torch.tensor(list(target_ids), dtype=torch.long, device=device)
        return _Problem(parts, cache, prefix.shape[1], after, target_tensor, embed(self.model, target_tensor))

    def _forward(self, problem: _Problem, suffix_embeds: Tensor) -> Tensor:
        """Logits ``[C, T, V]`` predicting the target after ``C`` suffixes ``[C, n, D]``, from the cached prefix."""
        c = suffix_embeds.shape[0]
        embeds = torch.cat([suffix_embeds, problem.after.expand(c, -1, -1), problem.target.expand(c, -1, -1)], dim=1)
        length = embeds.shape[1]
        positions = torch.arange(problem.prefix_length, problem.prefix_length + length, device=embeds.device)
        t = problem.target.shape[0]
        kwargs = {"logits_to_keep": t + 1} if _keeps_logits(self.model) else {}
        kwargs.update(cache_argument(self.model, problem.cache, repeat=c))
        out = self.model(inputs_embeds=embeds, position_ids=positions.expand(c, -1), use_cache=True, **kwargs)
        return out.logits[:, -(t + 1) : -1]

    def token_gradient(self, problem: _Problem, suffix: Tensor) -> Tensor:
        """``[n, V]``: the target loss's gradient with respect to the one-hot suffix, via the gathered rows."""
        weight = embedding_layer(self.model).weight
        e = embed(self.model, suffix).requires_grad_(True)
        logits = self._forward(problem, e[None])
        loss = F.cross_entropy(logits[0].float(), problem.target_ids)
        (grad,) = torch.autograd.grad(loss, e)
        return grad @ weight.detach().T

    def candidates(self, problem: _Problem, suffix: Tensor, generator: torch.Generator) -> Tensor:
        """``[C, n]`` distinct single-token substitutions of ``suffix`` (C <= search_width), filtered."""
        scores = self.token_gradient(problem, suffix)
        scores[:, self.not_allowed(scores.shape[1]).to(scores.device)] = float("inf")
        top = (-scores).topk(min(self.topk, scores.shape[1]), dim=1).indices  # [n, k]
        n, k = top.shape
        position = torch.randint(0, n, (self.search_width,), generator=generator).to(top.device)
        choice = torch.randint(0, k, (self.search_width,), generator=generator).to(top.device)
        out = suffix.repeat(self.search_width, 1)
        out[torch.arange(self.search_width, device=top.device), position] = top[position, choice]
        out = torch.unique(out, dim=0)  # sorted, so the order no longer depends on the draw order
        out = out[(out != suffix).any(dim=1)]
        if self.filter_retokenized and len(out):
            keep = [encode_text(self.tokenizer, self.tokenizer.decode(row)) == row.tolist() for row in out]
            out = out[torch.tensor(keep, dtype=torch.bool, device=out.device)]
        return out

    def candidate_losses(self, problem: _Problem, candidates: Tensor) -> tuple[Tensor, Tensor]:
        """Per candidate ``[C]``: the target's mean cross-entropy, and whether every target token is the argmax."""
        losses, matched = [], []
        with torch.no_grad():
            for start in range(0, len(candidates), self.batch_size):
                chunk = candidates[start : start + self.batch_size]
                logits = self._forward(problem, embed(self.model, chunk))
                labels = problem.target_ids.expand(len(chunk), -1)
                ce = F.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none").mean(dim=1)
                losses.append(ce)
                matched.append((logits.argmax(dim=-1) == labels).all(dim=1))
        return torch.cat(losses), torch.cat(matched)

    def not_allowed(self, vocab: int) -> Tensor:
        """Token ids a suffix may not use: special tokens, tokens that decode to nothing and, unless
        ``allow_non_ascii``, tokens with characters outside printable ASCII."""
        if self._not_allowed is None or len(self._not_allowed) != vocab:
            special = set(getattr(self.tokenizer, "all_special_ids", []) or [])
            bad = []
            for token in range(vocab):
                text = self.tokenizer.decode([token])
                if token in special or not text.strip():
                    bad.append(True)
                else:
                    bad.append(not self.allow_non_ascii and not (text.isascii() and text.isprintable()))
            self._not_allowed = torch.tensor(bad, dtype=torch.bool)
        return self._not_allowed

    # ---- the real-world check ---------------------------------------------------------------------------------

    def suffixed(self, conversation: list[Message], suffix: Sequence[int]) -> list[Message]:
        """The conversation with the suffix's text appended to the last user message."""
        text = conversation[-1]["content"] + self.tokenizer.decode(list(suffix))
        return [*conversation[:-1], {**conversation[-1], "content": text}]

    def _generate(self, conversations: list[list[Message]], optimised: list[list[int]]) -> tuple[list[str], list[bool]]:
        parts = [encode_prompt(self.tokenizer, c) for c in conversations]
        retokenizes = [p.ids == ids for p, ids in zip(parts, optimised, strict=True)]
        device = embedding_layer(self.model).weight.device
        generations: list[str] = []
        for start in range(0, len(parts), 8):
            batch = make_batch(parts[start : start + 8], None, pad=pad_id(self.tokenizer)).to(device)
            tokens = greedy_generate(
                self.model,
                embed(self.model, batch.input_ids),
                batch,
                max_new_tokens=self.max_new_tokens,
                stop=stop_ids(self.model, self.tokenizer),
            )
            generations += [self.tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
        return generations, retokenizes
