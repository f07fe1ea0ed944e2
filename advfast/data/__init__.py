"""Offline data sets as tensors (nothing is downloaded at run time)."""

from advfast.data.digits import load_digits

__all__ = ["load_digits"]
