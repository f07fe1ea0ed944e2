"""Prompt attacks on causal LMs, by name (adding one is a file and a line)."""

from advfast.llm.attacks.embedding import NORMS, EmbeddingAttack, EmbeddingAttackResult
from advfast.llm.attacks.gcg import GCG, GCGResult

ATTACKS = {"embedding": EmbeddingAttack, "gcg": GCG}

__all__ = ["ATTACKS", "GCG", "NORMS", "EmbeddingAttack", "EmbeddingAttackResult", "GCGResult"]
