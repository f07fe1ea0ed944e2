"""The base of every job's configuration: one serialisable record (``config.json`` reruns the job) whose field
metadata is the single source of the command line's flags and help.

Each field is declared with :func:`option`: its default, a help text, and optionally the choices, the flag's
group in ``--help``, and how "automatic" reads (the value ``None`` means "decide from the data or the method";
it is spelled ``auto`` on the command line and in ``--help``).
"""

from __future__ import annotations

import copy
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from advfast.checks import check_count, require

AUTO = "auto"

C = TypeVar("C", bound="RunConfig")


def option(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    group: str = "run",
    auto: str | None = None,
    cli: bool = True,
) -> Any:
    """A config field. ``auto`` documents what ``None`` means ("by data set", "0.2 for fgsm-rs, else off");
    ``cli=False`` keeps a field out of the command line (set by the program, e.g. from the data)."""
    metadata = {"help": help, "choices": choices, "group": group, "auto": auto, "cli": cli}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class RunConfig:
    """What every job has: where it writes, how long it runs, how it is seeded and checkpointed."""

    job: ClassVar[str] = "run"  # what kind of job this configures, for error messages

    epochs: int = option(10, "training epochs", group="training")
    batch_size: int = option(128, "samples per optimizer step, over all processes", group="training")
    seed: int = option(0, "seeds the data order, the initial weights and every random start", group="run")
    checkpoint_every: int = option(0, "optimizer steps between checkpoints (0: at the end of each epoch)")
    max_steps: int = option(0, "stop with a checkpoint after this many optimizer steps (0: no limit)")
    out: str = option("runs/run", "run folder: every file the job writes goes here, and nowhere else")
    device: str | None = option(None, "cpu, cuda, cuda:1, ...", auto="cuda if available, else cpu")
    progress: bool = option(True, "show progress bars (without them: one line per epoch)")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Every error names the field. Subclasses extend this and call it."""
        for name in ("epochs", "batch_size"):
            check_count(name, getattr(self, name))
        for name in ("seed", "checkpoint_every", "max_steps"):
            check_count(name, getattr(self, name), minimum=0)
        require(isinstance(self.out, str) and self.out != "", f"out must name a folder, got {self.out!r}")
        require(
            self.device is None or (isinstance(self.device, str) and self.device != ""),
            f"device must be a device name such as cpu or cuda:0, got {self.device!r}",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls: type[C], record: dict[str, Any]) -> C:
        """The config saved by :meth:`to_dict`; a field it does not know is an error (a record of another kind
        of job, or of another advfast version), and so is a missing one."""
        if not isinstance(record, dict):
            raise ValueError(f"a {cls.job} configuration must be a JSON object, got {type(record).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise ValueError(f"not a {cls.job} configuration: unknown fields {unknown}")
        return cls(**record)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Each field's default (None where it is automatic)."""
        out = {}
        for f in fields(cls):
            out[f.name] = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
        return out
