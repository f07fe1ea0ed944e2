"""Accuracy under embedding-space PGD: how far a classifier's decisions hold when its token embeddings may
move within a per-sequence L2 (or L-inf) ball, the ball the adversaries train against."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from advfast.eval.progress import EvalProgress, batch_digest, model_digest
from advfast.text.classifier import EmbeddingClassifier
from advfast.text.evaluation.batches import Batch, limited, total_examples
from advfast.text.guard import model_left_as_it_was, needs_autograd
from advfast.text.perturbation import ball_start, l2_step_, sign_step_
from advfast.text.validation import check_choice, check_count, check_generator_for, check_scalar


@dataclass
class EmbeddingAttackResult:
    """Per sample: ``delta [B, L, D]`` the strongest perturbation found (a fooling one first, else the
    largest loss; 0 for a sample misclassified clean), ``fooled [B]`` (misclassified at ``delta``, clean
    mistakes included), ``loss [B]`` the cross-entropy at ``delta`` (float32), ``clean_correct [B]``."""

    delta: Tensor
    fooled: Tensor
    loss: Tensor
    clean_correct: Tensor


def _per_sample_ce(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits.float(), labels, reduction="none")


def embedding_pgd(
    model: nn.Module,
    batch: Batch,
    *,
    eps: float,
    steps: int = 20,
    alpha: float | None = None,
    restarts: int = 5,
    norm: str = "l2",
    early_stop: bool = True,
    special_token_ids: Iterable[int] | None = None,
    generator: torch.Generator | None = None,
) -> EmbeddingAttackResult:
    """Untargeted PGD on the token embeddings of one batch, the model in eval mode (restored after).

    Per restart, from a uniform random point of each sequence's eps-ball (its movable tokens only), ``steps``
    fused steps along ``g = d/d delta sum_b CE(f(e + delta)_b, y_b)`` (delta-only gradients; ``[B, L*D]``
    samples)::

        l2:   delta_b <- P_eps(delta_b + alpha * g_b / ||g_b||_2)
        linf: delta   <- clip(delta + alpha * sign(g), -eps, eps)

    ``alpha`` defaults to ``2.5 * eps / steps``. With ``early_stop`` a sample misclassified at a step keeps
    that perturbation (a per-sample mask to the op) and leaves the batch for the rest of the restart; restarts
    run only on the samples not yet fooled, so the cost follows what still holds. Per sample the strongest
    result is kept. Padding and special tokens never move.
    The model's parameters' ``.grad`` are not touched.
    """
    needs_autograd("embedding_pgd")
    eps = check_scalar("eps", eps)
    steps = check_count("steps", steps)
    restarts = check_count("restarts", restarts)
    alpha = 2.5 * eps / steps if alpha is None else check_scalar("alpha", alpha, positive=True)
    norm = check_choice("norm", norm, ("l2", "linf"))
    classifier = EmbeddingClassifier(model, special_token_ids)
    check_generator_for(generator, classifier.device)
    step_ = l2_step_ if norm == "l2" else sign_step_
    with model_left_as_it_was(model, eval_mode=True), torch.enable_grad():
        text = classifier.prepare(batch)
        embeds = classifier.embed(text).detach()
        with torch.no_grad():
            logits = classifier.logits(text, embeds)
        best_loss = _per_sample_ce(logits, text.labels)
        clean_correct = logits.argmax(dim=1) == text.labels
        fooled = ~clean_correct
        best = torch.zeros_like(embeds)
        if eps == 0:
            return EmbeddingAttackResult(best, fooled, best_loss, clean_correct)
        for _ in range(restarts):
            active = torch.nonzero(~fooled).flatten()
            if active.numel() == 0:
                break
            sub, e = text.rows(active), embeds[active]
            delta = ball_start(e, sub.movable, eps=eps, norm=norm, generator=generator)
            origin = torch.zeros_like(delta)
            # ``d`` holds the rows of ``delta`` still attacked (``index`` into ``sub``; ``delta`` itself until a
            # sample leaves): a sample fooled at a step keeps that point and leaves the batch, so a restart costs
            # in proportion to what still holds. The rows are gathered again only when some leave.
            rows, e_live, d, index = sub, e, delta, None
            for _ in range(steps):
                point = d.detach().requires_grad_(True)
                step_logits = classifier.logits(rows, e_live + point)
                (grad,) = torch.autograd.grad(_per_sample_ce(step_logits, rows.labels).sum(), point)
                holds = step_logits.detach().argmax(dim=1) == rows.labels if early_stop else None
                step_(d, grad, rows.movable, eps=eps, alpha=alpha, active=holds, origin=origin[: d.shape[0]])
                if holds is None or bool(holds.all()):
                    continue
                if index is not None:
                    delta[index] = d
                keep = torch.nonzero(holds).flatten()
                index = keep if index is None else index[keep]
                if index.numel() == 0:
                    break
                rows, e_live, d = rows.rows(keep), e_live[keep], d[keep]
            if index is not None and index.numel() > 0:
                delta[index] = d
            with torch.no_grad():
                final = classifier.logits(sub, e + delta)
            loss = _per_sample_ce(final, sub.labels)
            hit = final.argmax(dim=1) != sub.labels
            better = hit | (loss > best_loss[active])
            chosen = active[better]
            best[chosen] = delta[better].to(best.dtype)
            best_loss[chosen] = loss[better]
            fooled[active] = fooled[active] | hit
    return EmbeddingAttackResult(best, fooled, best_loss, clean_correct)


@dataclass
class EmbeddingRobustness:
    """Accuracy under embedding PGD at each radius: ``accuracy[i]`` = fraction of the ``count`` examples
    classified correctly at every perturbation the attack tried within ``eps[i]`` (clean mistakes count as
    errors; ``eps`` 0 gives the clean accuracy)."""

    eps: list[float]
    accuracy: list[float]
    clean_accuracy: float
    count: int
    steps: int
    restarts: int
    norm: str


def embedding_pgd_accuracy(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    eps: Sequence[float],
    steps: int = 20,
    restarts: int = 5,
    alpha: float | None = None,
    norm: str = "l2",
    limit: int | None = None,
    special_token_ids: Iterable[int] | None = None,
    seed: int = 0,
    progress: bool = True,
    checkpoint: str | Path | None = None,
) -> EmbeddingRobustness:
    """:func:`embedding_pgd` (PGD-``steps``, ``restarts`` restarts, early stop) at every radius of the grid
    ``eps`` over the first ``limit`` examples of ``batches``; the random starts come from a generator seeded
    with ``seed``. ``alpha`` (default ``2.5 * eps / steps`` at each radius). A tqdm bar counts batches x radii.
    With ``checkpoint`` (a file path) the counts and the generator's state are saved there after every batch,
    and a later call with the same settings, weights and batches resumes from them
    (:mod:`advfast.eval.progress`): the numbers are those of an uninterrupted run."""
    grid = [check_scalar("eps", e) for e in eps]
    if not grid:
        raise ValueError("eps must list at least one radius")
    classifier = EmbeddingClassifier(model, special_token_ids)
    generator = torch.Generator(device=classifier.device).manual_seed(seed)
    correct = [0] * len(grid)
    clean_correct = count = 0
    saved = None
    if checkpoint is not None:
        fingerprint = {"attack": "embedding-pgd", "eps": grid, "steps": steps, "restarts": restarts, "alpha": alpha,
                       "norm": norm, "seed": seed, "model": model_digest(model)}  # fmt: skip
        saved = EvalProgress(checkpoint, fingerprint)
        if saved.load():
            correct, clean_correct, count = list(saved.state["correct"]), saved.state["clean"], saved.state["count"]
            generator.set_state(saved.state["generator"])
    total = total_examples(batches, limit)
    bar = tqdm(
        total=None if total is None else total * len(grid),
        desc="embedding PGD",
        unit="ex",
        disable=not progress,
        leave=False,
    )
    for index, raw in enumerate(limited(batches, limit, classifier.device)):
        size = raw["input_ids"].shape[0]  # type: ignore[union-attr]
        digest = None if saved is None else batch_digest(raw)
        if saved is not None and saved.skips(index, digest):
            bar.update(size * len(grid))
            continue
        for i, radius in enumerate(grid):
            result = embedding_pgd(
                model,
                raw,
                eps=radius,
                steps=steps,
                alpha=alpha,
                restarts=restarts,
                norm=norm,
                special_token_ids=classifier.special_token_ids,
                generator=generator,
            )
            correct[i] += int((~result.fooled).sum())
            if i == 0:
                clean_correct += int(result.clean_correct.sum())
            bar.update(size)
        count += size
        if saved is not None:
            saved.save(digest, {"correct": correct, "clean": clean_correct, "count": count,
                                "generator": generator.get_state()})  # fmt: skip
    bar.close()
    if saved is not None:
        saved.check_complete()
    if count == 0:
        raise ValueError("batches held no examples")
    return EmbeddingRobustness(grid, [c / count for c in correct], clean_correct / count, count, steps, restarts, norm)
