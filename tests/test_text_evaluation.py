"""Evaluation: the discrete attack finds known flips on a rigged model, embedding PGD reaches the exact
robustness radius of a linear bag-of-embeddings model (so accuracy falls with eps where it must), and the
results are consistent with forward passes on a tiny BERT."""

from __future__ import annotations

import math

import pytest
import torch
from text_support import (
    CLS,
    PAD,
    SEP,
    SPECIAL,
    BagOfEmbeddings,
    bert_tokenizer,
    movable,
    one_thread,  # noqa: F401  (autouse: one intra-op thread)
    tiny_bert,
    token_batch,
)

import advfast.text as text

# ---- a rigged bag of embeddings: logits = mean of the real tokens' 2-d embeddings ------------------------
TRAP, WEAK, BANNED, STRONG = 3, 7, 8, 9


def rigged() -> BagOfEmbeddings:
    """Ordinary tokens (4, 5, 6) vote for class 1; WEAK = (2, 0) and STRONG = (6, 0) for class 0; TRAP (a
    special token) and BANNED would flip anything but must never be used."""
    table = torch.zeros(10, 2)
    table[[4, 5, 6]] = torch.tensor([0.0, 1.0])
    table[WEAK], table[STRONG] = torch.tensor([2.0, 0.0]), torch.tensor([6.0, 0.0])
    table[TRAP], table[BANNED] = torch.tensor([100.0, 0.0]), torch.tensor([50.0, 0.0])
    return BagOfEmbeddings(table, torch.eye(2))


def rigged_batch() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[CLS, 4, 5, 6, 4, SEP], [CLS, 5, 6, 4, 5, SEP], [CLS, 4, 6, 5, SEP, PAD]])
    return {"input_ids": ids, "attention_mask": (ids != PAD).long(), "labels": torch.ones(3, dtype=torch.long)}


SPECIALS = (PAD, CLS, SEP, TRAP)


def test_token_substitution_finds_a_one_token_flip():
    result = text.token_substitution(rigged(), rigged_batch(), budget=3, special_token_ids=SPECIALS)
    assert result.fooled_at.tolist() == [1, 1, 1]
    assert result.substitutions.tolist() == [1, 1, 1]
    changed = result.input_ids != rigged_batch()["input_ids"]
    assert (result.input_ids[changed] == BANNED).all()  # the strongest allowed token: BANNED is allowed here


def test_token_substitution_needs_two_weak_swaps_when_the_strong_tokens_are_banned():
    batch = rigged_batch()
    allowed = torch.ones(10, dtype=torch.bool)
    allowed[[BANNED, STRONG]] = False
    one = text.token_substitution(rigged(), batch, budget=1, allowed_tokens=allowed, special_token_ids=SPECIALS)
    two = text.token_substitution(rigged(), batch, budget=2, allowed_tokens=allowed, special_token_ids=SPECIALS)
    # Row 0: 6 real tokens, 4 ordinary: one WEAK swap gives means (2/6, 3/6) (still class 1), two give (4/6, 2/6).
    # Row 2: 5 real tokens, 3 ordinary: one swap gives (2/5, 2/5), a tie argmax resolves to class 0.
    assert one.fooled_at.tolist() == [-1, -1, 1]
    assert two.fooled_at.tolist() == [2, 2, 1]
    original = batch["input_ids"]
    changed = two.input_ids != original
    assert (two.input_ids[changed] == WEAK).all()
    assert not changed[~movable(batch) | torch.isin(original, torch.tensor(SPECIALS))].any()
    assert TRAP not in two.input_ids

    robustness = text.token_substitution_accuracy(
        rigged(), [batch], budgets=(1, 2), allowed_tokens=allowed, special_token_ids=SPECIALS, progress=False
    )
    assert robustness.accuracy == pytest.approx([2 / 3, 0.0])
    assert robustness.clean_accuracy == 1.0
    assert robustness.mean_substitutions == pytest.approx(5 / 3)


def test_word_token_mask():
    tokenizer = bert_tokenizer()
    mask = text.word_token_mask(tokenizer)
    vocab = tokenizer.get_vocab()
    assert mask[vocab["good"]] and mask[vocab["movie"]]
    assert not mask[vocab["##s"]] and not mask[vocab["[CLS]"]] and not mask[vocab["[PAD]"]]
    assert text.word_token_mask(tokenizer, size=40).shape == (40,)


# ---- embedding PGD on a linear model: exact robustness radii -----------------------------------------------


def linear_problem():
    """Four sequences with known margins. For logits W mean(e) with W = I and label 1, a perturbation of the n
    movable tokens (L real tokens) changes z0 - z1 by at most eps * sqrt(2n) / L (L2, per sequence) or
    eps * 2n / L (L-inf); the gradient direction is the same for every step, so PGD reaches that bound."""
    table = torch.zeros(12, 2)
    table[4:] = torch.stack([torch.zeros(8), torch.linspace(0.2, 1.0, 8)], dim=1)
    return BagOfEmbeddings(table, torch.eye(2)), table


def padded(rows: list[list[int]]) -> dict[str, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([r + [PAD] * (width - len(r)) for r in rows])
    return {"input_ids": ids, "attention_mask": (ids != PAD).long(), "labels": torch.ones(len(rows), dtype=torch.long)}


FAST = {"steps": 10, "restarts": 2, "special_token_ids": SPECIAL}


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_embedding_pgd_reaches_the_exact_radius(norm):
    model, table = linear_problem()
    rows = [[CLS, 4, 6, SEP], [CLS, 5, 9, 11, SEP], [CLS, 8, 10, 7, 11, SEP], [CLS, 11, 11, SEP]]
    batch = padded(rows)
    radii = []
    for r in rows:
        words = r[1:-1]
        length, n = len(r), len(words)
        margin = sum(table[w, 1] - table[w, 0] for w in words).item() / length
        radii.append(margin * length / (math.sqrt(2 * n) if norm == "l2" else 2 * n))
    for radius in radii:
        below = text.embedding_pgd(model, batch, eps=0.95 * radius, norm=norm, **FAST)
        above = text.embedding_pgd(model, batch, eps=1.05 * radius, norm=norm, **FAST)
        expected_below = [r < 0.95 * radius for r in radii]
        expected_above = [r < 1.05 * radius for r in radii]
        assert below.fooled.tolist() == expected_below
        assert above.fooled.tolist() == expected_above

    grid = sorted([0.0, *(0.9 * r for r in radii), 10 * max(radii)])
    result = text.embedding_pgd_accuracy(model, [batch], eps=grid, norm=norm, progress=False, **FAST)
    expected = [sum(r > e for r in radii) / 4 for e in grid]
    assert result.accuracy == pytest.approx(expected)
    assert result.accuracy == sorted(result.accuracy, reverse=True)  # falls with eps
    assert result.accuracy[0] == result.clean_accuracy == 1.0 and result.accuracy[-1] == 0.0


class RowCounter(torch.nn.Module):
    """Wraps a classifier and records the rows of every forward that builds a graph (the attack's steps)."""

    def __init__(self, inner: BagOfEmbeddings) -> None:
        super().__init__()
        self.inner, self.config, self.rows = inner, inner.config, []

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.inner.get_input_embeddings()

    def forward(self, inputs_embeds, attention_mask, **unused):
        if torch.is_grad_enabled():
            self.rows.append(inputs_embeds.shape[0])
        return self.inner(inputs_embeds, attention_mask)


def test_embedding_pgd_drops_fooled_samples_from_the_batch():
    inner, table = linear_problem()
    rows = [[CLS, 4, SEP], [CLS, 4, 5, SEP], [CLS, 8, 10, 7, 11, SEP], [CLS, 11, 11, SEP]]
    radii = []
    for r in rows:
        words = r[1:-1]
        margin = sum(table[w, 1] - table[w, 0] for w in words).item() / len(r)
        radii.append(margin * len(r) / math.sqrt(2 * len(words)))
    eps = 0.6  # radii 0.14 and 0.26 fall (well inside: in a few steps), 1.09 and 1.0 hold
    holding = sum(r > eps for r in radii)
    counted = RowCounter(inner)
    result = text.embedding_pgd(
        counted, padded(rows), eps=eps, steps=10, restarts=2, special_token_ids=SPECIAL,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert result.fooled.tolist() == [r < eps for r in radii] and holding == 2
    first, second = counted.rows[:10], counted.rows[10:]
    assert first == sorted(first, reverse=True) and first[-1] == holding < first[0]  # the fooled leave
    assert second == [holding] * 10  # the restart runs on what held
    counted.rows.clear()
    no_stop = text.embedding_pgd(
        counted, padded(rows), eps=eps, steps=10, restarts=2, special_token_ids=SPECIAL, early_stop=False,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert no_stop.fooled.tolist() == result.fooled.tolist()
    assert counted.rows == [4] * 10 + [holding] * 10


# ---- consistency on a tiny BERT --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert():
    return tiny_bert()


def predictions(model, batch, delta=None, input_ids=None):
    ids = batch["input_ids"] if input_ids is None else input_ids
    e = model.get_input_embeddings()(ids)
    with torch.no_grad():
        return model(
            inputs_embeds=e if delta is None else e + delta, attention_mask=batch["attention_mask"]
        ).logits.argmax(1)


def test_embedding_pgd_result_is_what_a_forward_pass_sees(bert):
    batch = token_batch(lengths=(9, 5, 7, 3, 8, 6), num_labels=3)
    eps = 0.3
    result = text.embedding_pgd(
        bert,
        batch,
        eps=eps,
        steps=10,
        restarts=1,
        special_token_ids=SPECIAL,
        generator=torch.Generator().manual_seed(0),
    )
    more = text.embedding_pgd(
        bert,
        batch,
        eps=eps,
        steps=10,
        restarts=4,
        special_token_ids=SPECIAL,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(predictions(bert, batch, result.delta) != batch["labels"], result.fooled)
    assert torch.equal(predictions(bert, batch, more.delta) != batch["labels"], more.fooled)
    assert (more.fooled | ~result.fooled).all()  # more restarts never weaken the attack
    assert (result.delta.flatten(1).norm(dim=1) <= eps * (1 + 1e-5)).all()
    assert not result.delta[~movable(batch)].any()


def test_token_substitution_on_bert_changes_only_allowed_positions(bert):
    batch = token_batch(lengths=(9, 5, 7, 3), num_labels=3)
    result = text.token_substitution(bert, batch, budget=3, candidates=4, special_token_ids=SPECIAL)
    changed = result.input_ids != batch["input_ids"]
    assert not changed[~movable(batch)].any()
    assert (result.substitutions <= 3).all() and torch.equal(changed.sum(1), result.substitutions)
    assert not torch.isin(result.input_ids[changed], torch.tensor(SPECIAL)).any()
    wrong = predictions(bert, batch, input_ids=result.input_ids) != batch["labels"]
    assert torch.equal(wrong, result.fooled_at >= 0)


def test_clean_accuracy_and_limit(bert):
    batches = [token_batch(seed=s) for s in range(3)]
    full = text.clean_accuracy(bert, batches, class_names=["a", "b", "c"], progress=False)
    expected = torch.cat([predictions(bert, b) == b["labels"] for b in batches]).double().mean().item()
    assert full.accuracy == pytest.approx(expected) and full.count == 12
    assert set(full.report) >= {"a", "b", "c", "accuracy", "macro avg"}
    assert full.report["accuracy"] == pytest.approx(full.accuracy)
    first = text.clean_accuracy(bert, batches, limit=6, progress=False)
    assert first.count == 6 and torch.equal(first.predictions, full.predictions[:6])


# ---- resumable evaluation ------------------------------------------------------------------------------------


class Dies(Exception):
    """Stands for the kill of a long evaluation."""


def dying(batches, at: int | None):
    """The batches, raising :class:`Dies` when batch ``at`` is asked for (None: never)."""
    for index, batch in enumerate(batches):
        if index == at:
            raise Dies
        yield batch


@pytest.mark.parametrize("attack", ["embedding_pgd", "token_substitution"])
def test_a_killed_text_evaluation_resumes_to_the_uninterrupted_numbers(bert, tmp_path, attack):
    from advfast.eval.progress import EvalProgressMismatch

    batches = [token_batch(seed=s) for s in range(4)]
    if attack == "embedding_pgd":

        def run(data, checkpoint=None, **changes):
            kwargs = dict(eps=[0.1, 0.3], steps=3, restarts=2, special_token_ids=SPECIAL, seed=3, progress=False)
            return text.embedding_pgd_accuracy(bert, data, checkpoint=checkpoint, **(kwargs | changes))

        changed, named = {"eps": [0.1, 0.4]}, "eps"
    else:

        def run(data, checkpoint=None, **changes):
            kwargs = dict(budgets=[1, 2], candidates=3, special_token_ids=SPECIAL, progress=False)
            return text.token_substitution_accuracy(bert, data, checkpoint=checkpoint, **(kwargs | changes))

        changed, named = {"candidates": 4}, "candidates"
    uninterrupted = run(batches)
    progress = tmp_path / "progress.pt"
    with pytest.raises(Dies):
        run(dying(batches, at=2), progress)
    with pytest.raises(EvalProgressMismatch, match=named):
        run(batches, progress, **changed)
    other = [token_batch(seed=9), *batches[1:]]
    with pytest.raises(EvalProgressMismatch, match="batch 0 of the data differs"):
        run(other, progress)
    assert run(batches, progress) == uninterrupted
    assert run(batches, progress) == uninterrupted  # a finished file gives the result again
    # The random draws continued where they had stopped: the generator ends where an uninterrupted run's does.
    whole = tmp_path / "whole.pt"
    run(batches, whole)
    from advfast.runtime import load_checkpoint

    resumed_state, whole_state = load_checkpoint(progress)["state"], load_checkpoint(whole)["state"]
    assert set(resumed_state) == set(whole_state)
    for key, value in whole_state.items():
        mine = resumed_state[key]
        same = torch.equal(mine, value) if isinstance(value, torch.Tensor) else mine == value
        assert same, key
