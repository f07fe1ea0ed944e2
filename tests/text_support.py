"""Tiny transformer classifiers, batches and a tokenizer for the text tests (random weights, built offline)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn

transformers = pytest.importorskip("transformers", reason="the text tests need transformers (pip install transformers)")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The text tests' models are tiny: one intra-op thread is faster, and on a shared machine (other jobs on
    the cores) much faster, than threads that wait on each other. Imported by each test module."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


PAD, CLS, SEP = 0, 1, 2
SPECIAL = (PAD, CLS, SEP)
VOCAB = 40
WORDS = ["the", "good", "bad", "movie", "film", "was", "very", "plot", "great", "awful", "boring", "fun"]


def tiny_bert(num_labels: int = 3, seed: int = 0, dropout: float = 0.0, layers: int = 2) -> nn.Module:
    """BERT with hidden 32, 2 layers (or ``layers``), a 40-token vocabulary, in eval mode (dropout 0 unless asked)."""
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=num_labels,
        pad_token_id=PAD,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transformers.BertForSequenceClassification(config).eval()


def tiny_gpt2(num_labels: int = 3, seed: int = 0) -> nn.Module:
    """GPT-2 with hidden 32, 2 layers, the same vocabulary; pads with PAD (batches padded on the left)."""
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=32,
        num_labels=num_labels,
        pad_token_id=PAD,
        bos_token_id=CLS,
        eos_token_id=SEP,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transformers.GPT2ForSequenceClassification(config).eval()


def token_batch(
    lengths: tuple[int, ...] = (9, 5, 7, 3), width: int = 10, num_labels: int = 3, seed: int = 1, left: bool = False
) -> dict[str, Tensor]:
    """[CLS] w ... w [SEP] then padding (before the sequence when ``left``); labels cycle over the classes."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), width), PAD, dtype=torch.long)
    for row, n in enumerate(lengths):
        tokens = torch.cat([torch.tensor([CLS]), torch.randint(3, VOCAB, (n - 2,), generator=g), torch.tensor([SEP])])
        if left:
            ids[row, width - n :] = tokens
        else:
            ids[row, :n] = tokens
    labels = torch.arange(len(lengths)) % num_labels
    return {"input_ids": ids, "attention_mask": (ids != PAD).long(), "labels": labels}


def movable(batch: dict[str, Tensor]) -> Tensor:
    """[B, L] bool: real tokens that are not special."""
    ids = batch["input_ids"]
    return (batch["attention_mask"] != 0) & ~torch.isin(ids, torch.tensor(SPECIAL))


def twin(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def grads(model: nn.Module) -> dict[str, Tensor | None]:
    return {n: (None if p.grad is None else p.grad.detach().clone()) for n, p in model.named_parameters()}


def assert_grads_close(actual: nn.Module, expected: nn.Module, atol: float = 1e-6, rtol: float = 1e-5) -> None:
    for (name, p), q in zip(actual.named_parameters(), expected.parameters(), strict=True):
        if q.grad is None:
            assert p.grad is None or not p.grad.any(), f"{name}: unexpected gradient"
            continue
        assert p.grad is not None, f"{name}: no gradient"
        torch.testing.assert_close(p.grad, q.grad, atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}")


def bert_tokenizer() -> object:
    """A WordPiece tokenizer over [PAD] [CLS] [SEP] [UNK] [MASK] and a few words (no files needed)."""
    tokens = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]", *WORDS, "##s"]
    return transformers.BertTokenizer(vocab={t: i for i, t in enumerate(tokens)})


class BagOfEmbeddings(nn.Module):
    """A linear classifier on the mean of the real tokens' embeddings: ``z = W mean_i(e_i) + b``. Its loss
    landscapes are known in closed form, so attacks on it have exact answers."""

    def __init__(self, embedding: Tensor, weight: Tensor, bias: Tensor | None = None) -> None:
        super().__init__()
        self.embed = nn.Embedding.from_pretrained(embedding.clone(), freeze=False)
        self.head = nn.Linear(embedding.shape[1], weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(torch.zeros(weight.shape[0]) if bias is None else bias)
        self.config = SimpleNamespace(num_labels=weight.shape[0], pad_token_id=PAD)

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def forward(self, inputs_embeds: Tensor, attention_mask: Tensor, **unused: Tensor) -> Tensor:
        mask = attention_mask.unsqueeze(-1).to(inputs_embeds.dtype)
        pooled = (inputs_embeds * mask).sum(dim=1) / mask.sum(dim=1)
        return self.head(pooled)


# ---- fine-tuning runs: a saved tiny classifier and an easy data file --------------------------------------

POSITIVE, NEGATIVE = ("good", "great", "fun"), ("bad", "awful", "boring")
FILLER = ("the", "movie", "film", "was", "plot")


def save_tiny_classifier(folder, num_labels: int = 2, dropout: float = 0.0, seed: int = 0):
    """A tiny random BERT classifier and its tokenizer saved as a ``from_pretrained`` folder (what
    ``--model FOLDER`` reads)."""
    tiny_bert(num_labels=num_labels, seed=seed, dropout=dropout).save_pretrained(folder)
    bert_tokenizer().save_pretrained(folder)
    return folder


def write_easy_csv(path, n: int = 120, seed: int = 0):
    """``n`` rows (text, label): label 1 texts hold one positive word among filler words, label 0 a negative
    one; the filler says nothing about the class, so a model that learns reads the sentiment word."""
    import csv
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 5))]
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
        rows.append({"text": " ".join(words), "label": label})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path
