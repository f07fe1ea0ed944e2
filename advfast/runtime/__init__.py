"""What every job shares: the run folder (locked, written atomically), checkpoints (checksummed, weights-only),
the run loop (seeding, stops on signals, exact resume), configs whose fields make the command line, and
torch.distributed set-up."""

from advfast.runtime.checkpoint import CheckpointError, check_finite_state, load_checkpoint, save_checkpoint
from advfast.runtime.config import RunConfig, option
from advfast.runtime.distributed import DistContext, make_loader, resolve_device
from advfast.runtime.files import atomic_write, atomic_write_text
from advfast.runtime.loop import Progress, RunLoop, Stop, StopReason
from advfast.runtime.run_folder import RunFolder, RunFolderError, check_writable_file
from advfast.runtime.seeds import derive_seed
from advfast.runtime.signals import StopRequest, stop_on_signals

__all__ = [
    "CheckpointError", "DistContext", "Progress", "RunConfig", "RunFolder", "RunFolderError", "RunLoop", "Stop",
    "StopReason", "StopRequest", "atomic_write", "atomic_write_text", "check_finite_state", "check_writable_file",
    "derive_seed", "load_checkpoint", "make_loader", "option", "resolve_device", "save_checkpoint",
    "stop_on_signals",
]  # fmt: skip
