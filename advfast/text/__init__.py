"""Adversarial fine-tuning of transformer classifiers: embedding-space adversaries, a classifier loader and
robustness evaluation. ``transformers`` is needed only to load models (:func:`load_classifier`).

One call per training batch::

    adversary = advfast.text.FreeLB(model, eps=0.6, alpha=0.1, steps=2)   # or FGM, PGD, SMART, R3F
    loss = adversary.loss(batch)       # has run its passes and back-propagated (see each class)
    optimizer.step(); optimizer.zero_grad()

``batch`` is the dict a tokenizer and :class:`advfast.data.text.TextCollate` give: ``input_ids``,
``attention_mask``, optional ``token_type_ids`` / ``special_tokens_mask``, and ``labels``.
"""

from advfast.text.adversaries import ADVERSARIES, FGM, PGD, R3F, SMART, Adversary, FreeLB, make_adversary
from advfast.text.evaluation import (
    CleanEvaluation,
    EmbeddingAttackResult,
    EmbeddingRobustness,
    TokenSubstitutionResult,
    TokenSubstitutionRobustness,
    clean_accuracy,
    embedding_pgd,
    embedding_pgd_accuracy,
    token_substitution,
    token_substitution_accuracy,
    word_token_mask,
)
from advfast.text.models import CLASSIFIERS, load_classifier

__all__ = [
    "ADVERSARIES",
    "CLASSIFIERS",
    "FGM",
    "PGD",
    "R3F",
    "SMART",
    "Adversary",
    "CleanEvaluation",
    "EmbeddingAttackResult",
    "EmbeddingRobustness",
    "FreeLB",
    "TokenSubstitutionResult",
    "TokenSubstitutionRobustness",
    "clean_accuracy",
    "embedding_pgd",
    "embedding_pgd_accuracy",
    "load_classifier",
    "make_adversary",
    "token_substitution",
    "token_substitution_accuracy",
    "word_token_mask",
]
