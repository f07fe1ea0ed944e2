"""Loading data: the named data sets, .npz files, image folders and torch Datasets, and the errors of bad or
degenerate data (named files, never a silently meaningless model)."""

from __future__ import annotations

import os
import resource

import numpy as np
import pytest
import torch

from advfast.data import (
    DATASETS,
    DataSplits,
    dataset_splits,
    folder_splits,
    load_dataset,
    npz_splits,
    standard_eps,
)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 8, 8), dtype=np.uint8)


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_digits_splits_are_held_out_and_reproducible():
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=0)
    assert isinstance(a, DataSplits) and a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.train.y, b.train.y)
    assert float(a.train.x.min()) >= 0.0 and float(a.train.x.max()) <= 1.0
    half = load_dataset("digits", subset=0.5, seed=0)
    assert abs(len(half.train) - len(a.train) / 2) <= 10 and torch.equal(half.test.x, a.test.x)


def test_standard_radii():
    assert standard_eps("mnist", "linf") == 0.3 and standard_eps("digits", "linf") == 0.1
    assert standard_eps("mnist", "l2") == 2.0
    assert standard_eps("/some/folder", "linf") == pytest.approx(8 / 255)
    assert set(DATASETS) == {"digits", "mnist", "fashion-mnist"}


def test_npz_with_its_own_test_split_and_class_names(tmp_path):
    y = np.arange(60) % 3
    path = write_npz(tmp_path / "d.npz", x=images(60), y=y, x_test=images(12, 1), y_test=np.arange(12) % 3,
                     classes=np.array(["cat", "dog", "owl"]))  # fmt: skip
    splits = npz_splits(path)
    assert splits.classes == ["cat", "dog", "owl"] and len(splits.test) == 12
    assert splits.train.x.dtype == torch.float32 and float(splits.train.x.max()) <= 1.0
    assert splits.input_shape == (1, 8, 8)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": images(10)}, r"needs arrays x and y; missing \['y'\]"),
        ({"x": images(10), "y": np.arange(10) % 2, "x_test": images(4)}, "x_test and y_test come together"),
        ({"x": images(10), "y": np.zeros(10, dtype=int)}, r"needs at least 2 classes to learn anything"),
        ({"x": images(11), "y": np.array([*range(10), 100])}, "every class present; 90 of 101 classes have no sample"),
        ({"x": images(10), "y": np.arange(10) % 5, "classes": np.array(["a", "b"])}, r"class indices 0\.\.1"),
        ({"x": images(10), "y": np.arange(10) % 2 - 1}, r"found labels -1..0"),
        ({"x": images(10), "y": np.linspace(0, 1, 10)}, "y must hold 10 integer labels"),
        ({"x": np.full((10, 8, 8), 2.0), "y": np.arange(10) % 2}, r"float images must be finite and in \[0, 1\]"),
        ({"x": np.array(["a"] * 10), "y": np.arange(10) % 2}, "images must be a numeric array"),
    ],
    ids=["no-y", "x_test-alone", "one-class", "label-100", "short-classes", "negative", "float-labels",
         "out-of-range", "strings"],
)  # fmt: skip
def test_bad_npz_files_are_refused_naming_the_file(tmp_path, arrays, message):
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message) as raised:
        load_dataset(str(path))
    assert str(path) in str(raised.value)


def test_a_truncated_npz_is_refused_naming_the_file(tmp_path):
    path = write_npz(tmp_path / "cut.npz", x=images(100), y=np.arange(100) % 2)
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(ValueError, match=r"cut\.npz: not a readable \.npz file"):
        npz_splits(path)


def write_folder(root, per_class: int, classes=("a", "b")):
    from PIL import Image

    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(images(1, seed=100 * label + i)[0]).save(root / name / f"{i:04d}.png")
    return root


def test_an_image_folder_opens_its_files_one_at_a_time(tmp_path):
    root = write_folder(tmp_path / "imgs", per_class=60)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    open_now = len(os.listdir("/proc/self/fd"))
    try:
        # Fewer file handles than images: opening them all at once would fail.
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + 30, hard))
        splits = folder_splits(root)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert splits.classes == ["a", "b"] and len(splits.train) + len(splits.val) + len(splits.test) == 120
    assert splits.input_shape == (1, 8, 8)


@pytest.mark.parametrize("content", [b"\x89PNG not really", b"", bytes(range(256))], ids=["header", "empty", "noise"])
def test_an_unreadable_image_is_named(tmp_path, content):
    root = write_folder(tmp_path / "imgs", per_class=3)
    bad = root / "b" / "0001.png"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=f"{bad}: not a readable image"):
        folder_splits(root)


def test_a_torch_dataset_is_read_once_and_checked():
    pairs = [(torch.rand(1, 8, 8), i % 4) for i in range(40)]
    splits = dataset_splits(pairs, name="mine")  # type: ignore[arg-type]
    assert splits.num_classes == 4 and splits.name == "mine"
    with pytest.raises(ValueError, match="needs at least 2 classes"):
        dataset_splits([(torch.rand(1, 8, 8), 7) for _ in range(20)], name="mine")  # type: ignore[arg-type]


def test_splits_refuse_labels_outside_their_classes(digits_data):
    with pytest.raises(ValueError, match=r"labels must be class indices 0..4"):
        DataSplits("x", digits_data.train, digits_data.val, digits_data.test, [str(i) for i in range(5)])
