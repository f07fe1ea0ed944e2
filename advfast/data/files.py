"""User data: a folder of images with one sub-folder per class, a ``.npz`` file, or any torch Dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from advfast.data.splits import DataSplits, TensorImages, carve

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _as_images(x: np.ndarray | torch.Tensor, source: str) -> torch.Tensor:
    """[N, H, W], [N, C, H, W] or [N, H, W, C] (C in 1, 3, 4) to float32 [N, C, H, W] in [0, 1]: integer
    images are divided by 255; float images must already lie in [0, 1]."""
    x = torch.as_tensor(np.asarray(x))
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


def _labels(y: np.ndarray | torch.Tensor, n: int, source: str) -> tuple[torch.Tensor, list[str]]:
    y = torch.as_tensor(np.asarray(y))
    if y.shape != (n,) or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"{source}: y must hold {n} integer labels, got dtype {y.dtype} shape {tuple(y.shape)}")
    if n and y.min() < 0:
        raise ValueError(f"{source}: labels must be >= 0")
    classes = [str(c) for c in range(int(y.max()) + 1 if n else 0)]
    return y.long(), classes


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
    """A ``.npz`` with ``x`` (images) and ``y`` (integer labels), optionally ``x_test``/``y_test`` (then
    used as the test split) and ``classes`` (names)."""
    with np.load(path, allow_pickle=False) as archive:
        missing = {"x", "y"} - set(archive.files)
        if missing:
            raise ValueError(f"{path}: a .npz data set needs arrays x and y; missing {sorted(missing)}")
        x = _as_images(archive["x"], str(path))
        y, classes = _labels(archive["y"], x.shape[0], str(path))
        test = None
        if "x_test" in archive.files:
            x_test = _as_images(archive["x_test"], f"{path}:x_test")
            y_test, _ = _labels(archive["y_test"], x_test.shape[0], f"{path}:y_test")
            test = TensorImages(x_test, y_test)
        if "classes" in archive.files:
            classes = [str(c) for c in archive["classes"]]
    return _split(path.stem, TensorImages(x, y), classes, test_fraction, val_fraction, seed, test)


def folder_splits(path: Path, *, test_fraction: float = 0.2, val_fraction: float = 0.1, seed: int = 0) -> DataSplits:
    """A folder with one sub-folder of images per class (sub-folder names, sorted, are the classes). All
    images are resized to the size of the first one, in grayscale if every image is, else RGB."""
    try:
        from PIL import Image
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
    images = [Image.open(f) for f, _ in files]
    mode = "L" if all(im.mode in ("1", "L", "LA", "I", "I;16") for im in images) else "RGB"
    size = images[0].size
    arrays = [np.asarray(im.convert(mode).resize(size, Image.BILINEAR)) for im in images]
    x = _as_images(np.stack(arrays), str(path))
    y = torch.tensor([label for _, label in files], dtype=torch.int64)
    classes = [d.name for d in class_dirs]
    return _split(path.name, TensorImages(x, y), classes, test_fraction, val_fraction, seed)


def dataset_splits(
    dataset: Dataset, *, name: str = "dataset", test_fraction: float = 0.2, val_fraction: float = 0.1, seed: int = 0
) -> DataSplits:
    """Any map-style torch Dataset of (image [C, H, W] or [H, W], label) pairs, read once into memory."""
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError(f"{name}: the data set is empty")
    pairs = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
    x = _as_images(torch.stack([torch.as_tensor(p[0]) for p in pairs]), name)
    y, classes = _labels(torch.tensor([int(p[1]) for p in pairs]), x.shape[0], name)
    return _split(name, TensorImages(x, y), classes, test_fraction, val_fraction, seed)
