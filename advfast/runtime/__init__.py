"""Infrastructure shared by the training loops: atomic checkpoints, graceful stops, torch.distributed."""

from advfast.runtime.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from advfast.runtime.distributed import DistContext, make_loader
from advfast.runtime.signals import StopRequest, stop_on_signals

__all__ = [
    "CheckpointError", "DistContext", "StopRequest", "load_checkpoint", "make_loader", "save_checkpoint",
    "stop_on_signals",
]  # fmt: skip
