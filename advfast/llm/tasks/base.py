"""What a prompt-robustness task is: attacked prompts with a safe and an unsafe response, and benign prompts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from advfast.llm.chat import Conversation


@dataclass(frozen=True)
class AttackExample:
    """A prompt an attacker wants overturned: ``messages`` (ending with the user's turn), the ``safe`` response
    the model should give, the unsafe ``target`` the attacker wants, and the ``marker`` whose appearance in a
    generation counts as the attack's success (the secret itself)."""

    messages: Conversation
    safe: str
    target: str
    marker: str


@dataclass(frozen=True)
class BenignExample:
    """A prompt the model should simply answer; ``marker`` must not appear in the answer (None: nothing to keep)."""

    messages: Conversation
    marker: str | None = None


@dataclass
class Task:
    """A task's splits: ``train`` / ``val`` / ``test`` attacked prompts (``test``: held-out prompt templates and
    held-out secrets) and ``benign_train`` / ``benign_test`` prompts for the utility loss and its measurement."""

    name: str
    seed: int
    train: list[AttackExample]
    val: list[AttackExample]
    test: list[AttackExample]
    benign_train: list[BenignExample]
    benign_test: list[BenignExample]
    details: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> list[AttackExample]:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be one of ['train', 'val', 'test'], got {name!r}")
        return getattr(self, name)

    def describe(self) -> dict[str, Any]:
        sizes = {k: len(getattr(self, k)) for k in ("train", "val", "test", "benign_train", "benign_test")}
        return {"name": self.name, "seed": self.seed, "sizes": sizes, **self.details}
