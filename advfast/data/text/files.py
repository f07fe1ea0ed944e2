"""User text data: a CSV file or a JSON-lines file with a text column and a label column.

Labels are integers ``0..C-1`` or class names (mapped to indices in sorted order). An optional ``split``
column (``train``, ``validation``/``val``/``dev``, ``test``) gives a published split; splits it does not give
are carved from the training rows, stratified and fixed by the seed.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from advfast.data.text.examples import TextExamples, TextSplits, labels_from_values, split_examples

SPLIT_NAMES = {"train": "train", "validation": "val", "val": "val", "dev": "val", "test": "test"}


def _read_csv(path: Path, columns: tuple[str, str]) -> list[dict[str, object]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path}: the CSV needs columns {list(columns)}; missing {missing} (header: {header})")
        return [dict(row) for row in reader]


def _read_jsonl(path: Path, columns: tuple[str, str]) -> list[dict[str, object]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: each line must be a JSON object with {list(columns)}")
            missing = [c for c in columns if c not in row]
            if missing:
                raise ValueError(f"{path}:{number}: missing {missing}")
            rows.append(row)
    return rows


def text_file_splits(
    path: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> TextSplits:
    """Read ``path`` (``.csv``, or ``.jsonl``/``.json`` with one object per line) into splits."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    columns = (text_column, label_column)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _read_csv(path, columns)
    elif suffix in (".jsonl", ".json"):
        rows = _read_jsonl(path, columns)
    else:
        raise ValueError(f"{path}: a text data file must be .csv or .jsonl, got {suffix or 'no suffix'!r}")
    if not rows:
        raise ValueError(f"{path}: no rows")
    for number, row in enumerate(rows, start=1):
        text, label = row[text_column], row[label_column]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path}: row {number}: {text_column!r} must be a non-empty string, got {text!r}")
        if label is None or (isinstance(label, str) and not label.strip()):
            raise ValueError(f"{path}: row {number}: {label_column!r} is empty")
    labels, classes = labels_from_values([row[label_column] for row in rows], str(path))
    texts = [str(row[text_column]) for row in rows]
    parts = {"train": [], "val": [], "test": []}
    for i, row in enumerate(rows):
        split = row.get("split")
        if split is None or split == "":
            parts["train"].append(i)
            continue
        key = SPLIT_NAMES.get(str(split).strip().lower())
        if key is None:
            raise ValueError(f"{path}: row {i + 1}: split must be one of {sorted(SPLIT_NAMES)}, got {split!r}")
        parts[key].append(i)
    if not parts["train"]:
        raise ValueError(f"{path}: no training rows (split column)")

    def take(indices: list[int]) -> TextExamples:
        return TextExamples([texts[i] for i in indices], [labels[i] for i in indices])

    given = [k for k in ("val", "test") if parts[k]]
    notes = [f"{k}: the file's own split ({len(parts[k])} rows)" for k in given]
    return split_examples(
        path.stem,
        take(parts["train"]),
        classes,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        seed=seed,
        test=take(parts["test"]) if parts["test"] else None,
        val=take(parts["val"]) if parts["val"] else None,
        notes=notes,
    )
