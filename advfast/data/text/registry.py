"""Text data sets by name (or path to a CSV / JSON-lines file)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from advfast.data.text.bbc_news import bbc_news_splits
from advfast.data.text.examples import TextSplits
from advfast.data.text.files import text_file_splits
from advfast.data.text.movie_reviews import movie_review_splits

TEXT_DATASETS: dict[str, Callable[..., TextSplits]] = {
    "rotten-tomatoes": lambda **kw: movie_review_splits("rotten-tomatoes", **kw),
    "imdb": lambda **kw: movie_review_splits("imdb", **kw),
    "bbc-news": bbc_news_splits,
}


TEXT_FILE_SUFFIXES = (".csv", ".jsonl", ".json")


def is_text_data(name: str | Path) -> bool:
    """Whether ``name`` names a text data set: one of ``TEXT_DATASETS`` or a .csv / .jsonl file."""
    return (isinstance(name, str) and name in TEXT_DATASETS) or Path(name).suffix.lower() in TEXT_FILE_SUFFIXES


def load_text_dataset(
    name: str | Path, *, test_fraction: float = 0.2, val_fraction: float = 0.1, seed: int = 0, **columns: str
) -> TextSplits:
    """``name`` is one of ``TEXT_DATASETS`` or a path to a ``.csv`` / ``.jsonl`` file (``columns``:
    ``text_column``, ``label_column``). Splits are stratified and fixed by ``seed``."""
    fractions = {"test_fraction": test_fraction, "val_fraction": val_fraction, "seed": seed}
    if isinstance(name, str) and name in TEXT_DATASETS:
        if columns:
            raise ValueError(f"column names apply to files only, not to the {name!r} data set")
        return TEXT_DATASETS[name](**fractions)
    path = Path(name)
    if path.suffix.lower() in TEXT_FILE_SUFFIXES:
        return text_file_splits(path, **fractions, **columns)
    raise ValueError(f"data must be one of {sorted(TEXT_DATASETS)} or a .csv / .jsonl file, got {str(name)!r}")
