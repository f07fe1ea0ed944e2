"""A discrete attack: gradient-guided token substitution (HotFlip-style; Ebrahimi, Rao, Lowd & Dou, "HotFlip:
White-Box Adversarial Examples for Text Classification", ACL 2018), to see whether robustness in embedding
space carries over to real word swaps."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from advfast.eval.progress import EvalProgress, batch_digest, model_digest
from advfast.text.batch import TextBatch
from advfast.text.classifier import EmbeddingClassifier
from advfast.text.evaluation.batches import Batch, limited, total_examples
from advfast.text.guard import model_left_as_it_was, needs_autograd
from advfast.text.validation import check_count

NEVER = -1


@dataclass
class TokenSubstitutionResult:
    """``input_ids [B, L]`` after the substitutions; ``substitutions [B]`` tokens changed; ``fooled_at [B]``
    the number of substitutions after which the prediction was wrong (0: wrong on the clean text; -1: still
    right after ``budget``)."""

    input_ids: Tensor
    substitutions: Tensor
    fooled_at: Tensor


def word_token_mask(tokenizer: object, size: int | None = None) -> Tensor:
    """``[V]`` bool: the tokens a word swap may use, whole alphabetic words of the vocabulary (WordPiece: not
    ``##`` pieces; byte-level BPE / SentencePiece: word-initial ``Ġ`` / ``▁`` tokens), never special tokens.
    ``size`` pads to the model's embedding rows (rows past the tokenizer's vocabulary are never used)."""
    vocab: dict[str, int] = tokenizer.get_vocab()  # type: ignore[attr-defined]
    special = set(getattr(tokenizer, "all_special_ids", []))
    size = max(vocab.values()) + 1 if size is None else size
    mask = torch.zeros(size, dtype=torch.bool)
    wordpiece = any(t.startswith("##") for t in vocab)
    for token, index in vocab.items():
        if index >= size or index in special:
            continue
        if wordpiece:
            ok = not token.startswith("##") and token.isalpha()
        else:
            ok = token[:1] in ("Ġ", "▁") and token[1:].isalpha()
        mask[index] = ok
    return mask


def _candidate_scores(
    grad: Tensor, embeds: Tensor, table: Tensor, banned: Tensor, frozen: Tensor, ids: Tensor
) -> Tensor:
    """First-order loss change of putting token w at position i: ``(E_w - e_i) . g_i`` -> [n, L, V] float32,
    -inf where not allowed (frozen positions, banned tokens, the token already there)."""
    g = grad.float()
    scores = torch.matmul(g, table.float().t()) - (g * embeds.float()).sum(dim=-1, keepdim=True)
    scores.masked_fill_(banned.view(1, 1, -1), float("-inf"))
    scores.masked_fill_(frozen.unsqueeze(-1), float("-inf"))
    scores.scatter_(2, ids.unsqueeze(-1), float("-inf"))
    return scores


def token_substitution(
    model: nn.Module,
    batch: Batch,
    *,
    budget: int,
    candidates: int = 8,
    allowed_tokens: Tensor | None = None,
    special_token_ids: Iterable[int] | None = None,
    chunk: int = 256,
) -> TokenSubstitutionResult:
    """Greedy gradient-guided token substitution on one batch, the model in eval mode (restored after).

    Up to ``budget`` rounds, for the samples still classified correctly: the gradient ``g [L, D]`` of the
    cross-entropy w.r.t. the token embeddings ranks every substitution ``(i, w)`` by ``(E_w - e_i) . g_i`` (E
    the embedding table); the ``candidates`` best are checked by forward passes (batched, ``chunk`` sequences
    at a time) and the one with the largest true loss is applied, a prediction-flipping one first. A position
    is changed at most once; padding and special tokens never change, and only ``allowed_tokens`` (``[V]``
    bool, default every non-special token) are put in.
    """
    needs_autograd("token_substitution")
    budget = check_count("budget", budget)
    candidates = check_count("candidates", candidates)
    chunk = check_count("chunk", chunk)
    classifier = EmbeddingClassifier(model, special_token_ids)
    table = classifier.embeddings.weight  # type: ignore[union-attr]
    vocabulary = table.shape[0]
    allowed = torch.ones(vocabulary, dtype=torch.bool) if allowed_tokens is None else allowed_tokens.bool().cpu()
    if allowed.shape != (vocabulary,):
        raise ValueError(f"allowed_tokens must be a [V] = [{vocabulary}] bool mask, got shape {tuple(allowed.shape)}")
    allowed = allowed.clone()
    allowed[list(i for i in classifier.special_token_ids if 0 <= i < vocabulary)] = False
    banned = ~allowed.to(table.device)
    with model_left_as_it_was(model, eval_mode=True):
        text = classifier.prepare(batch)
        ids = text.input_ids.clone()
        changed = torch.zeros_like(ids, dtype=torch.bool)
        with torch.no_grad():
            clean = classifier.logits(text, classifier.embed(text))
        fooled_at = torch.where(clean.argmax(1) != text.labels, 0, NEVER)
        for round_ in range(1, budget + 1):
            active = torch.nonzero(fooled_at == NEVER).flatten()
            if active.numel() == 0:
                break
            sub = replace(text.rows(active), input_ids=ids[active])
            new_ids, flipped = _one_substitution(
                classifier, sub, table, banned, ~sub.movable | changed[active], candidates, chunk
            )
            moved = (new_ids != ids[active]).any(dim=1)
            changed[active] |= new_ids != ids[active]
            ids[active] = new_ids
            fooled_at[active[flipped & moved]] = round_
    return TokenSubstitutionResult(ids, changed.sum(dim=1), fooled_at)


def _one_substitution(
    classifier: EmbeddingClassifier,
    batch: TextBatch,
    table: Tensor,
    banned: Tensor,
    frozen: Tensor,
    candidates: int,
    chunk: int,
) -> tuple[Tensor, Tensor]:
    """The best single substitution per row among the gradient's top candidates: (new ids [n, L], flipped [n])."""
    with torch.enable_grad():
        embeds = classifier.embed(batch).detach().requires_grad_(True)
        loss = F.cross_entropy(classifier.logits(batch, embeds).float(), batch.labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, embeds)
    n, length = batch.input_ids.shape
    vocabulary = table.shape[0]
    positions, tokens, valid = [], [], []
    rows_per_chunk = max(1, (64 * 2**20) // max(1, length * vocabulary * 4))  # score blocks of ~64 MB
    with torch.no_grad():
        for start in range(0, n, rows_per_chunk):
            rows = slice(start, start + rows_per_chunk)
            scores = _candidate_scores(
                grad[rows], embeds[rows].detach(), table, banned, frozen[rows], batch.input_ids[rows]
            )
            top = scores.flatten(1).topk(min(candidates, length * vocabulary), dim=1)
            positions.append(top.indices // vocabulary)
            tokens.append(top.indices % vocabulary)
            valid.append(torch.isfinite(top.values))
        position, token, ok = torch.cat(positions), torch.cat(tokens), torch.cat(valid)
        k = position.shape[1]
        variants = batch.input_ids.repeat_interleave(k, dim=0)
        flat = torch.arange(n * k, device=variants.device)
        variants[flat, position.flatten()] = token.flatten()
        expanded = batch.rows(torch.arange(n, device=variants.device).repeat_interleave(k))
        losses, flips = [], []
        for start in range(0, n * k, chunk):
            part = expanded.rows(torch.arange(start, min(start + chunk, n * k), device=variants.device))
            part = replace(part, input_ids=variants[start : start + chunk])
            logits = classifier.logits(part, classifier.embed(part))
            losses.append(F.cross_entropy(logits.float(), part.labels, reduction="none"))
            flips.append(logits.argmax(dim=1) != part.labels)
        loss_k, flip_k = torch.cat(losses).view(n, k), torch.cat(flips).view(n, k)
        # A flip beats any loss; invalid candidates (fewer than k allowed substitutions) never win.
        rank = torch.where(ok, loss_k + flip_k.float() * 1e9, torch.full_like(loss_k, float("-inf")))
        best = rank.argmax(dim=1)
        any_ok = ok.any(dim=1)
        chosen = torch.where(any_ok.unsqueeze(1), variants.view(n, k, length)[torch.arange(n), best], batch.input_ids)
        flipped = any_ok & flip_k[torch.arange(n), best]
    return chosen, flipped


@dataclass
class TokenSubstitutionRobustness:
    """Accuracy after up to k token substitutions, for each budget k: ``accuracy[i]`` for ``budgets[i]``
    (clean mistakes count as errors), over ``count`` examples; ``mean_substitutions`` among the fooled ones."""

    budgets: list[int]
    accuracy: list[float]
    clean_accuracy: float
    count: int
    candidates: int
    mean_substitutions: float


def token_substitution_accuracy(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    budgets: Sequence[int] = (1, 2, 4),
    candidates: int = 8,
    tokenizer: object | None = None,
    allowed_tokens: Tensor | None = None,
    limit: int | None = None,
    special_token_ids: Iterable[int] | None = None,
    progress: bool = True,
    checkpoint: str | Path | None = None,
) -> TokenSubstitutionRobustness:
    """:func:`token_substitution` with the largest budget over the first ``limit`` examples; the greedy
    rounds give the accuracy at every smaller budget on the way. With a ``tokenizer`` the swaps use whole
    words only (:func:`word_token_mask`) and its special tokens never change. A tqdm bar counts examples.
    With ``checkpoint`` (a file path) the counts are saved there after every batch and a later call with the
    same settings, weights and batches resumes from them (:mod:`advfast.eval.progress`)."""
    grid = sorted({check_count("budgets", k) for k in budgets})
    if not grid:
        raise ValueError("budgets must list at least one budget")
    classifier = EmbeddingClassifier(model, special_token_ids)
    if tokenizer is not None:
        if allowed_tokens is None:
            allowed_tokens = word_token_mask(tokenizer, classifier.vocabulary_size)
        if special_token_ids is None:
            classifier = EmbeddingClassifier(model, getattr(tokenizer, "all_special_ids", None))
    correct = [0] * len(grid)
    clean_correct = count = 0
    substitutions: list[Tensor] = []
    saved = None
    if checkpoint is not None:
        words_only = tokenizer is not None or allowed_tokens is not None
        fingerprint = {"attack": "token-substitution", "budgets": grid, "candidates": candidates,
                       "words_only": words_only, "model": model_digest(model)}  # fmt: skip
        saved = EvalProgress(checkpoint, fingerprint)
        if saved.load():
            correct, clean_correct, count = list(saved.state["correct"]), saved.state["clean"], saved.state["count"]
            substitutions = [saved.state["substitutions"]]
    bar = tqdm(
        total=total_examples(batches, limit), desc="token substitution", unit="ex", disable=not progress, leave=False
    )
    for index, raw in enumerate(limited(batches, limit, classifier.device)):
        digest = None if saved is None else batch_digest(raw)
        if saved is not None and saved.skips(index, digest):
            bar.update(raw["input_ids"].shape[0])  # type: ignore[union-attr]
            continue
        result = token_substitution(
            model,
            raw,
            budget=grid[-1],
            candidates=candidates,
            allowed_tokens=allowed_tokens,
            special_token_ids=classifier.special_token_ids,
        )
        at = result.fooled_at
        for i, k in enumerate(grid):
            correct[i] += int(((at == NEVER) | (at > k)).sum())
        clean_correct += int((at != 0).sum())
        substitutions.append(result.substitutions[at > 0].cpu())
        count += at.shape[0]
        bar.update(at.shape[0])
        if saved is not None:
            saved.save(digest, {"correct": correct, "clean": clean_correct, "count": count,
                                "substitutions": torch.cat(substitutions)})  # fmt: skip
    bar.close()
    if saved is not None:
        saved.check_complete()
    if count == 0:
        raise ValueError("batches held no examples")
    used = torch.cat(substitutions)
    mean = float(used.float().mean()) if used.numel() else 0.0
    return TokenSubstitutionRobustness(
        grid, [c / count for c in correct], clean_correct / count, count, candidates, mean
    )
