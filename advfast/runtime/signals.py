"""Ctrl-C and SIGTERM ask a running job to stop at the next step boundary, after saving a checkpoint."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class StopRequest:
    """Set by SIGINT/SIGTERM while installed; the training loop polls it between steps."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signal = signum


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Install the handlers (main thread only; elsewhere the request simply never fires), restore on exit."""
    request = StopRequest()
    previous = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, request._handle)
    except ValueError:  # not the main thread
        pass
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
