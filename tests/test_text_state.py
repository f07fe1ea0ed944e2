"""The caller's model and data are left as they were by every adversary and evaluation (modes, requires_grad
flags, hooks, gradients; also after an exception); non-finite gradients move nothing; bf16 autocast trains
without NaN."""

from __future__ import annotations

import math

import pytest
import torch
from text_support import (
    SPECIAL,
    BagOfEmbeddings,
    grads,
    one_thread,  # noqa: F401  (autouse: one intra-op thread)
    tiny_bert,
    token_batch,
    twin,
)
from torch import Tensor, nn

import advfast.text as text
from advfast.text.perturbation import l2_step_, max_scaled_step_, sign_step_, sphere_step_

SETTINGS = {
    "fgm": {"eps": 0.5},
    "pgd": {"eps": 0.5, "steps": 2},
    "freelb": {"eps": 0.3, "steps": 3, "init_mag": 0.5},
    "smart": {"eps": 0.05, "steps": 2},
    "r3f": {"eps": 1e-2},
}


@pytest.fixture(scope="module")
def base_model():
    return tiny_bert(dropout=0.1)


def hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks)
        for m in model.modules()
    )


def snapshot(model: nn.Module) -> dict:
    return {
        "modes": [m.training for m in model.modules()],
        "flags": [p.requires_grad for p in model.parameters()],
        "hooks": hooks(model),
    }


@pytest.mark.parametrize("method", sorted(SETTINGS))
def test_model_flags_and_frozen_parameters_are_kept(base_model, method):
    model = twin(base_model).train()
    model.bert.encoder.layer[0].eval()  # a mixed state must survive too
    frozen = model.bert.encoder.layer[1].attention.self.query.weight
    frozen.requires_grad_(False)
    batch = token_batch()
    copies = {k: v.clone() for k, v in batch.items()}
    before = snapshot(model)
    text.make_adversary(method, model, special_token_ids=SPECIAL, **SETTINGS[method]).loss(batch)
    assert snapshot(model) == before
    assert frozen.grad is None  # a frozen parameter gets no gradient
    assert model.classifier.weight.grad is not None
    for k, v in batch.items():
        assert torch.equal(v, copies[k]), f"batch[{k!r}] was modified"


@pytest.mark.parametrize("method", sorted(SETTINGS))
def test_gradients_add_to_existing_ones(base_model, method):
    """Gradient accumulation: the call adds its gradients to what .grad held, as loss.backward() does."""
    model = twin(base_model)  # eval mode: deterministic, so two runs can be compared
    batch = token_batch()
    make = lambda m: text.make_adversary(  # noqa: E731
        method, m, special_token_ids=SPECIAL, generator=torch.Generator().manual_seed(0), **SETTINGS[method]
    )
    make(model).loss(batch)
    once = grads(model)
    make(model).loss(batch)
    for (name, p), first in zip(model.named_parameters(), once.values(), strict=True):
        if first is not None:
            torch.testing.assert_close(p.grad, 2 * first, atol=1e-6, rtol=1e-5, msg=name)


class Explode(nn.Module):
    """Wraps a module; raises on its n-th call (1-based)."""

    def __init__(self, inner: nn.Module, at: int) -> None:
        super().__init__()
        self.inner, self.at, self.calls = inner, at, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            raise RuntimeError("boom")
        return self.inner(*args, **kwargs)


@pytest.mark.parametrize("method", sorted(SETTINGS))
@pytest.mark.parametrize("existing", [False, True])
def test_state_restored_after_an_exception(base_model, method, existing):
    """An exception in the second forward (after a first backward has already accumulated gradients, for
    FGM, FreeLB) leaves .grad, modes and flags as they were on entry."""
    model = twin(base_model).train()
    batch = token_batch()
    if existing:
        model.bert.pooler.dense.weight.grad = torch.full_like(model.bert.pooler.dense.weight, 0.5)
    before, grads_before = snapshot(model), grads(model)
    adversary = text.make_adversary(method, model, special_token_ids=SPECIAL, **SETTINGS[method])
    model.bert.encoder.layer[1] = Explode(model.bert.encoder.layer[1], at=2)
    with pytest.raises(RuntimeError, match="boom"):
        adversary.loss(batch)
    model.bert.encoder.layer[1] = model.bert.encoder.layer[1].inner
    assert snapshot(model) == before
    for name, g in grads(model).items():
        expected = grads_before[name]
        assert (g is None) == (expected is None), name
        if g is not None:
            assert torch.equal(g, expected), name


@pytest.mark.parametrize(
    "evaluate",
    [
        lambda m, b: text.embedding_pgd(m, b, eps=0.5, steps=3, restarts=2, special_token_ids=SPECIAL),
        lambda m, b: text.token_substitution(m, b, budget=2, special_token_ids=SPECIAL),
        lambda m, b: text.clean_accuracy(m, [b], special_token_ids=SPECIAL, progress=False),
    ],
    ids=["embedding_pgd", "token_substitution", "clean_accuracy"],
)
def test_evaluations_touch_no_gradient_and_restore_modes(base_model, evaluate):
    model = twin(base_model).train()
    before = snapshot(model)
    evaluate(model, token_batch())
    assert snapshot(model) == before
    assert all(p.grad is None for p in model.parameters())


# ---- non-finite gradients -------------------------------------------------------------------------------


def test_steps_leave_a_sequence_with_a_nonfinite_gradient_unmoved():
    torch.manual_seed(0)
    delta = torch.randn(3, 5, 4) * 0.01
    grad = torch.randn(3, 5, 4)
    grad[1, 2, 3] = float("nan")
    grad[2, 0, 0] = float("inf")
    mv = torch.ones(3, 5, dtype=torch.bool)
    steps = {
        "l2": lambda d: l2_step_(d, grad, mv, eps=1.0, alpha=0.1),
        "l2 per token": lambda d: l2_step_(d, grad, mv, eps=1.0, alpha=0.1, per_token=True),
        "sign": lambda d: sign_step_(d, grad, mv, eps=1.0, alpha=0.1),
        "max-scaled": lambda d: max_scaled_step_(d, grad, mv, eps=1.0, alpha=0.1, per_token=False),
        "sphere": lambda d: sphere_step_(d, grad, mv, eps=1.0, alpha=0.1, norm="linf"),
    }
    for name, step in steps.items():
        moved = step(delta.clone())
        assert torch.isfinite(moved).all(), name
        assert torch.equal(moved[1:], delta[1:]), name
        assert not torch.equal(moved[0], delta[0]), name


def test_adversary_with_nonfinite_gradients_moves_nothing():
    """A model whose embeddings carry an infinity for one sequence: that sequence never moves, the others do."""
    torch.manual_seed(0)
    embedding = torch.randn(10, 4)
    embedding[9] = float("inf")
    model = BagOfEmbeddings(embedding, torch.randn(2, 4))
    ids = torch.tensor([[1, 3, 4, 2], [1, 9, 4, 2]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1])}
    trace: list[Tensor] = []
    text.PGD(model, eps=0.5, steps=2, random_start=False, special_token_ids=(0, 1, 2)).loss(batch, trace=trace)
    assert trace[-1][0].abs().sum() > 0
    assert not trace[-1][1].any()


# ---- mixed precision --------------------------------------------------------------------------------------


def clean_loss(model: nn.Module, batch: dict[str, Tensor]) -> float:
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.nn.functional.cross_entropy(logits.float(), batch["labels"]).item()


def rule_batch(generator: torch.Generator, size: int = 8) -> dict[str, Tensor]:
    """[CLS] w w ... [SEP], label 1 when the first word's id is above 20: learnable."""
    ids = torch.randint(3, 40, (size, 12), generator=generator)
    ids[:, 0], ids[:, -1] = 1, 2
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": (ids[:, 1] > 20).long()}


@pytest.mark.slow
def test_bf16_autocast_trains_1000_steps_without_nan():
    """1,000 optimizer steps from step 0 under bf16 autocast on a one-layer tiny BERT, FreeLB (the method known
    to diverge when its steps are too large) for the first 500 and PGD for the rest, two passes a step:
    every loss and every weight stays finite, and the clean loss on held-out batches falls below chance.
    Radii suit the tiny model's embeddings (per-token norm about 0.1)."""
    model = tiny_bert(num_labels=2, seed=3, dropout=0.1, layers=1).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    adversaries = [
        text.FreeLB(model, eps=0.1, alpha=0.03, steps=2, init_mag=0.1, special_token_ids=SPECIAL, generator=generator),
        text.PGD(model, eps=0.1, steps=1, special_token_ids=SPECIAL, generator=generator),
    ]
    data, held_out = torch.Generator().manual_seed(1), rule_batch(torch.Generator().manual_seed(2), size=256)
    for step in range(1000):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = adversaries[step // 500].loss(rule_batch(data))
        assert math.isfinite(loss.item()), f"step {step}: loss {loss.item()}"
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    model.eval()
    assert clean_loss(model, held_out) < 0.5  # chance is ln 2 = 0.69
