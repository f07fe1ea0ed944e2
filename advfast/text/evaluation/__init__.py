"""Robustness evaluation of text classifiers: clean accuracy with scikit-learn's report, accuracy under
embedding-space PGD over an eps grid, and under gradient-guided token substitution over token budgets."""

from advfast.text.evaluation.clean import CleanEvaluation, clean_accuracy
from advfast.text.evaluation.embedding_pgd import (
    EmbeddingAttackResult,
    EmbeddingRobustness,
    embedding_pgd,
    embedding_pgd_accuracy,
)
from advfast.text.evaluation.token_substitution import (
    TokenSubstitutionResult,
    TokenSubstitutionRobustness,
    token_substitution,
    token_substitution_accuracy,
    word_token_mask,
)

__all__ = [
    "CleanEvaluation",
    "EmbeddingAttackResult",
    "EmbeddingRobustness",
    "TokenSubstitutionResult",
    "TokenSubstitutionRobustness",
    "clean_accuracy",
    "embedding_pgd",
    "embedding_pgd_accuracy",
    "token_substitution",
    "token_substitution_accuracy",
    "word_token_mask",
]
