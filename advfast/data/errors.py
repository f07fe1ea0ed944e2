"""The error a data set that is not installed raises: it says how to install it."""

from __future__ import annotations


class DatasetUnavailable(RuntimeError):
    """A known data set whose files or package are missing on this machine."""

    def __init__(self, name: str, install: str) -> None:
        super().__init__(f"the {name} data set is not installed on this machine; install it with: {install}")
        self.name = name
        self.install = install
