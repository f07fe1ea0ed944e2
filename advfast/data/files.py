"""User data: a folder of images with one sub-folder per class, a ``.npz`` file, or any torch Dataset."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from advfast.data.splits import DataSplits, TensorImages, carve, check_labels

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _as_images(x: np.ndarray | torch.Tensor, source: str) -> torch.Tensor:
    """[N, H, W], [N, C, H, W] or [N, H, W, C] (C in 1, 3, 4) to float32 [N, C, H, W] in [0, 1]: integer
    images are divided by 255; float images must already lie in [0, 1]."""
    try:
        x = torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError):
        raise ValueError(f"{source}: images must be a numeric array, got {np.asarray(x).dtype}") from None
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise ValueError(f"{source}: images must be [N, H, W], [N, C, H, W] or [N, H, W, C], got {tuple(x.shape)}")
    if x.shape[1] not in (1, 3, 4) and x.shape[3] in (1, 3, 4):
        x = x.permute(0, 3, 1, 2)
    if not x.is_floating_point():
        x = x.float() / 255.0
    x = x.float().contiguous()
    if x.numel() and (not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1):
        raise ValueError(f"{source}: float images must be finite and in [0, 1]")
    return x


def _labels(y: np.ndarray | torch.Tensor, n: int, source: str) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(y))
    if y.shape != (n,) or y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
        raise ValueError(f"{source}: y must hold {n} integer labels, got dtype {y.dtype} shape {tuple(y.shape)}")
    return y.long()


def _class_names(y: torch.Tensor, names: list[str] | None, source: str) -> list[str]:
    """The given class names, or "0".."C-1" for labels up to C-1; the labels are checked against them."""
    classes = names if names is not None else [str(c) for c in range(int(y.max()) + 1 if len(y) else 0)]
    check_labels(y, classes, source)
    return classes


def _split(
    name: str,
    data: TensorImages,
    classes: list[str],
    test_fraction: float,
    val_fraction: float,
    seed: int,
    test: TensorImages | None = None,
) -> DataSplits:
    if len(data) == 0:
        raise ValueError(f"{name}: the data set is empty")
    notes = []
    if test is None:
        data, test = carve(data, test_fraction, seed)
        notes.append(f"test: {test_fraction:g} held out (stratified, seed {seed})")
    train, val = carve(data, val_fraction, seed + 1)
    notes.append(f"validation: {val_fraction:g} of the rest (stratified, seed {seed + 1})")
    return DataSplits(name, train, val, test, classes, notes)


def npz_splits(path: Path, *, test_fraction: float = 0.2, val_fraction: float = 0.1, seed: int = 0) -> DataSplits:
    """A ``.npz`` with ``x`` (images) and ``y`` (integer labels 0..C-1), optionally ``x_test`` and ``y_test``
    (then used as the test split) and ``classes`` (names, one per label)."""
    try:
        # Our own handle: numpy leaves its file open when the archive turns out to be unreadable.
        with open(path, "rb") as file, np.load(file, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .npz file (truncated or corrupt?): {exc}") from None
    missing = {"x", "y"} - set(arrays)
    if missing:
        raise ValueError(f"{path}: a .npz data set needs arrays x and y; missing {sorted(missing)}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ValueError(
            f"{path}: x_test and y_test come together; it has only {'x_test' if 'x_test' in arrays else 'y_test'}"
        )
    x = _as_images(arrays["x"], str(path))
    y = _labels(arrays["y"], x.shape[0], str(path))
    names = [str(c) for c in arrays["classes"]] if "classes" in arrays else None
    classes = _class_names(y, names, str(path))
    test = None
    if "x_test" in arrays:
        x_test = _as_images(arrays["x_test"], f"{path}:x_test")
        y_test = _labels(arrays["y_test"], x_test.shape[0], f"{path}:y_test")
        check_labels(y_test, classes, f"{path}:y_test", every_class=False, minimum=0)
        if x_test.shape[1:] != x.shape[1:]:
            raise ValueError(f"{path}: x_test images are {tuple(x_test.shape[1:])}, x images {tuple(x.shape[1:])}")
        test = TensorImages(x_test, y_test)
    return _split(path.stem, TensorImages(x, y), classes, test_fraction, val_fraction, seed, test)


def folder_splits(path: Path, *, test_fraction: float = 0.2, val_fraction: float = 0.1, seed: int = 0) -> DataSplits:
    """A folder with one sub-folder of images per class (sub-folder names, sorted, are the classes). All
    images are resized to the size of the first one, in grayscale if every image is, else RGB. Files are opened
    one at a time (a folder may hold more images than the process may have open files)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise ImportError("reading image folders needs Pillow: pip install pillow") from exc
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir())
    files = [
        (f, label)
        for label, d in enumerate(class_dirs)
        for f in sorted(d.iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise ValueError(f"{path}: no images found (expected one sub-folder of images per class)")

    def read(file: Path, convert: Callable[[Any], np.ndarray]) -> np.ndarray:
        try:
            with Image.open(file) as image:
                return convert(image)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise ValueError(f"{file}: not a readable image (truncated or corrupt?): {exc}") from None

    modes = [read(f, lambda im: im.mode) for f, _ in files]
    mode = "L" if all(m in ("1", "L", "LA", "I", "I;16") for m in modes) else "RGB"
    size = read(files[0][0], lambda im: im.size)
    arrays = [read(f, lambda im: np.asarray(im.convert(mode).resize(size, Image.BILINEAR))) for f, _ in files]
    x = _as_images(np.stack(arrays), str(path))
    y = torch.tensor([label for _, label in files], dtype=torch.int64)
    classes = [d.name for d in class_dirs]
    check_labels(y, classes, str(path))
    return _split(path.name, TensorImages(x, y), classes, test_fraction, val_fraction, seed)


def dataset_splits(
    dataset: Dataset, *, name: str = "dataset", test_fraction: float = 0.2, val_fraction: float = 0.1, seed: int = 0
) -> DataSplits:
    """Any map-style torch Dataset of (image [C, H, W] or [H, W], label) pairs, read once into memory."""
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError(f"{name}: the data set is empty")
    pairs = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
    x = _as_images(torch.stack([torch.as_tensor(p[0]) for p in pairs]), name)
    y = _labels(torch.tensor([int(p[1]) for p in pairs]), x.shape[0], name)
    classes = _class_names(y, None, name)
    return _split(name, TensorImages(x, y), classes, test_fraction, val_fraction, seed)
