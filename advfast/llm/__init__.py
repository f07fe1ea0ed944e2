"""Prompt attacks on causal LMs and training against them.

    attack = advfast.llm.EmbeddingAttack(model, tokenizer, eps=0.05, steps=50, norm="l2-per-token")
    result = attack.run(prompts, targets)       # result.success, result.x_adv, result.losses
    result = advfast.llm.GCG(model, tokenizer, steps=100).run(prompts, targets)
    trainer = advfast.llm.ContinuousAT(model, tokenizer, method="cat", out="runs/smol-cat"); trainer.fit()

Attacks: the embedding attack (per-token L2 / L-inf balls or unconstrained, on the prompt or as a soft suffix)
and GCG. Training: ``sft`` (refusal fine-tuning) and ``cat`` (continuous adversarial training), LoRA or full,
on the shared run loop. Models (``smollm2``) and tasks (``secret``) by name.
"""

from advfast.llm.attacks import ATTACKS, GCG, NORMS, EmbeddingAttack, EmbeddingAttackResult, GCGResult
from advfast.llm.config import LLMTrainConfig
from advfast.llm.models import MODELS, ModelUnavailable, load_model
from advfast.llm.saved import TrainedLLM, load_trained
from advfast.llm.tasks import TASKS, Task, load_task
from advfast.llm.trainer import ContinuousAT

__all__ = [
    "ATTACKS",
    "GCG",
    "MODELS",
    "NORMS",
    "TASKS",
    "ContinuousAT",
    "EmbeddingAttack",
    "EmbeddingAttackResult",
    "GCGResult",
    "LLMTrainConfig",
    "ModelUnavailable",
    "Task",
    "TrainedLLM",
    "load_model",
    "load_task",
    "load_trained",
]
