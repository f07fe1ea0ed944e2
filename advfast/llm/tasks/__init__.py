"""Prompt-robustness tasks by name (adding one is a file and a line)."""

from __future__ import annotations

from collections.abc import Callable

from advfast.llm.tasks.base import AttackExample, BenignExample, Task
from advfast.llm.tasks.secret import build_secret_task

TASKS: dict[str, Callable[..., Task]] = {"secret": build_secret_task}


def load_task(name: str, seed: int = 0, **sizes: int) -> Task:
    """The task ``name`` built from ``seed`` (``sizes``: the builder's split sizes)."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name](seed, **sizes)


__all__ = ["TASKS", "AttackExample", "BenignExample", "Task", "build_secret_task", "load_task"]
