"""Bad arguments and bad batches give clear errors that name what is wrong."""

from __future__ import annotations

import pytest
import torch
from text_support import (
    SPECIAL,
    one_thread,  # noqa: F401  (autouse: one intra-op thread)
    tiny_bert,
    tiny_gpt2,
    token_batch,
)
from torch import nn

import advfast.text as text


@pytest.fixture(scope="module")
def model():
    return tiny_bert()


@pytest.mark.parametrize("method", sorted(text.ADVERSARIES))
def test_negative_eps_is_refused(model, method):
    with pytest.raises(ValueError, match="eps must be finite and >= 0"):
        text.make_adversary(method, model, eps=-0.1)


@pytest.mark.parametrize(
    ("method", "kwargs", "match"),
    [
        ("pgd", {"steps": 0}, "steps must be an integer >= 1"),
        ("freelb", {"steps": 0}, "steps must be an integer >= 1"),
        ("smart", {"steps": 0}, "steps must be an integer >= 1"),
        ("freelb", {"steps": 2.5}, "steps must be an integer >= 1"),
        ("pgd", {"alpha": 0.0}, "alpha must be finite and > 0"),
        ("freelb", {"alpha": -1.0}, "alpha must be finite and > 0"),
        ("freelb", {"eps": float("nan")}, "eps must be finite and >= 0"),
        ("fgm", {"eps": float("inf")}, "eps must be finite and >= 0"),
        ("freelb", {"init_mag": -1.0}, "init_mag must be finite and >= 0"),
        ("fgm", {"norm": "l1"}, "norm must be one of"),
        ("pgd", {"norm": "L2"}, "norm must be one of"),
        ("freelb", {"variant": "freelb++"}, "variant must be one of"),
        ("smart", {"projection": "cube"}, "projection must be one of"),
        ("r3f", {"noise": "gaussian"}, "noise must be one of"),
        ("r3f", {"weight": -1.0}, "weight must be finite and >= 0"),
        ("fgm", {"eps": "0.5"}, "eps must be a float"),
        ("pgd", {"generator": "seed"}, "generator must be a torch.Generator"),
    ],
)
def test_bad_hyper_parameters_name_the_argument(model, method, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        text.make_adversary(method, model, **kwargs)


def test_unknown_method(model):
    with pytest.raises(ValueError, match=r"method must be one of \['fgm', 'freelb', 'pgd', 'r3f', 'smart'\]"):
        text.make_adversary("vat", model)


class NoEmbeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x):
        return self.linear(x)


class NoInputsEmbeds(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def forward(self, input_ids):
        return self.embed(input_ids).mean(1)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (NoEmbeddings(), "has no get_input_embeddings"),
        (NoInputsEmbeds(), "must accept inputs_embeds"),
        (lambda x: x, "must be a torch.nn.Module"),
    ],
)
def test_model_without_input_embeddings(bad, match):
    with pytest.raises(TypeError, match=match):
        text.FGM(bad)
    with pytest.raises(TypeError, match=match):
        text.embedding_pgd(bad, token_batch(), eps=0.1)


def test_labels_outside_the_heads_classes(model):
    batch = token_batch()
    batch["labels"] = torch.tensor([0, 1, 3, 0])  # the head has 3 classes
    for method in sorted(text.ADVERSARIES):
        with pytest.raises(ValueError, match=r"labels outside \[0, 3\) for a classifier with 3 classes"):
            text.make_adversary(method, model).loss(batch)
    batch["labels"] = torch.tensor([0, -1, 1, 0])
    with pytest.raises(ValueError, match="labels outside"):
        text.FGM(model).loss(batch)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda b: b.pop("labels"), "batch must have 'labels'"),
        (lambda b: b.update(labels=torch.tensor([0.0, 1.0, 1.0, 0.0])), "labels'] must be integer class indices"),
        (
            lambda b: b.update(labels=torch.tensor([0, 1])),
            r"labels'\] must be integer class indices of shape \[B\] = \[4\]",
        ),
        (lambda b: b.update(input_ids=b["input_ids"].float()), "input_ids'] must be an integer tensor"),
        (
            lambda b: b.update(attention_mask=b["attention_mask"][:, :5]),
            "attention_mask'] must have the shape of input_ids",
        ),
        (lambda b: b.update(special_tokens_mask=[0, 1]), "special_tokens_mask'] must be a torch.Tensor"),
    ],
)
def test_bad_batches(model, change, match):
    batch = token_batch()
    change(batch)
    with pytest.raises((ValueError, TypeError), match=match):
        text.PGD(model, special_token_ids=SPECIAL).loss(batch)


def test_batch_must_be_a_dict(model):
    with pytest.raises(TypeError, match="batch must be a dict of tensors"):
        text.FGM(model).loss([torch.zeros(2, 3, dtype=torch.long)])


def test_decoder_only_classifier_needs_left_padding():
    with pytest.raises(ValueError, match="pad its batches on the left"):
        text.FreeLB(tiny_gpt2(), special_token_ids=SPECIAL).loss(token_batch(left=False))


def test_inference_mode_is_refused(model):
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"outside torch\.inference_mode"):
        text.FGM(model).loss(token_batch())


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m, b: text.embedding_pgd(m, b, eps=-1.0), "eps must be finite and >= 0"),
        (lambda m, b: text.embedding_pgd(m, b, eps=0.1, restarts=0), "restarts must be an integer >= 1"),
        (lambda m, b: text.embedding_pgd(m, b, eps=0.1, norm="l1"), "norm must be one of"),
        (lambda m, b: text.token_substitution(m, b, budget=0), "budget must be an integer >= 1"),
        (lambda m, b: text.token_substitution(m, b, budget=1, allowed_tokens=torch.ones(5)), "allowed_tokens must be"),
        (lambda m, b: text.embedding_pgd_accuracy(m, [b], eps=[]), "eps must list at least one radius"),
        (lambda m, b: text.embedding_pgd_accuracy(m, [b], eps=[0.1], limit=0), "limit must be None or an integer >= 1"),
        (lambda m, b: text.token_substitution_accuracy(m, [b], budgets=[0]), "budgets must be an integer >= 1"),
        (lambda m, b: text.clean_accuracy(m, [], progress=False), "batches held no examples"),
        (lambda m, b: text.clean_accuracy(m, [b], class_names=["a"], progress=False), "class_names must name the 3"),
    ],
)
def test_evaluation_arguments(model, call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(model, token_batch())


def test_load_classifier_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_labels must be an integer >= 2"):
        text.load_classifier("minilm", 1)
    with pytest.raises(ValueError, match=r"name_or_path must be one of \['minilm'\] or a local folder"):
        text.load_classifier(tmp_path / "nothing-here", 2)
