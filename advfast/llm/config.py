"""The configuration of an LLM training run (``advfast llm-train``): its fields make the command line."""

from __future__ import annotations

from dataclasses import dataclass

from advfast.checks import check_choice, check_count, check_real
from advfast.llm.attacks.embedding import NORMS
from advfast.llm.chat import REGIONS
from advfast.llm.models import DTYPES
from advfast.runtime.config import RunConfig, option

METHODS = ("sft", "cat")
FINETUNES = ("lora", "full")
PARALLEL = ("ddp", "fsdp")


@dataclass
class LLMTrainConfig(RunConfig):
    """A run of ``sft`` (refusal fine-tuning: the safe response to the clean prompt, plus the utility loss) or
    ``cat`` (continuous adversarial training, Xhonneux et al. 2024: the toward loss on the safe response and the
    floored away loss on the unsafe target, both under an embedding attack toward the unsafe target, plus the
    utility loss). Defaults follow CAT's unlikelihood configuration (attack: 10 steps at eps 0.05 of the mean
    embedding norm; weights toward 0.5, away 0.5, utility 1; cutoffs toward 0.5, away -5) scaled down to a
    small model on a CPU (LoRA r 8, 3 epochs)."""

    job = "llm training"

    model: str = option("smollm2", "a registered model (smollm2) or a local from_pretrained folder", group="data")
    task: str = option("secret", "the task (secret); its splits are built from --seed", group="data")
    train_size: int = option(200, "attacked training prompts (and as many benign ones)", group="data")
    val_size: int = option(
        16, "validation prompts (held-out templates, training secrets), checked each epoch", group="evaluation"
    )
    dtype: str = option("float32", "the model's weights", choices=tuple(DTYPES), group="data")
    method: str = option(
        "cat", "sft (refusal fine-tuning) or cat (continuous adversarial training)", choices=METHODS, group="method"
    )
    eps: float = option(0.05, "cat: attack radius, relative to the mean embedding norm", group="method")
    attack_steps: int = option(10, "cat: attack steps per batch", group="method")
    alpha: float | None = option(None, "cat: attack step, relative like eps", group="method", auto="2.5 eps / steps")
    norm: str = option("l2-per-token", "cat: the attack's ball", choices=NORMS, group="method")
    region: str = option(
        "user",
        "cat: tokens the attack moves (user: the user's message; prompt: all of it)",
        choices=REGIONS,
        group="method",
    )
    toward_weight: float = option(0.5, "weight of the toward loss (the safe response)", group="method")
    away_weight: float = option(0.5, "cat: weight of the away loss (the unsafe target)", group="method")
    utility_weight: float = option(
        1.0, "weight of the utility loss (the base model's answers to benign prompts)", group="method"
    )
    toward_cutoff: float = option(0.5, "cat: the toward loss flattens below this cross-entropy", group="method")
    away_cutoff: float = option(-5.0, "cat: the away loss (-CE) is floored here", group="method")
    finetune: str = option("lora", "lora (adapters only, via peft) or full", choices=FINETUNES, group="training")
    lora_r: int = option(8, "LoRA rank", group="training")
    lora_alpha: int = option(16, "LoRA scale numerator (scale = alpha / r)", group="training")
    lr: float = option(2e-4, "AdamW learning rate", group="training")
    weight_decay: float = option(0.0, "AdamW weight decay", group="training")
    epochs: int = option(3, "passes over the training prompts", group="training")
    batch_size: int = option(
        8, "attacked prompts per optimizer step (as many benign ones), over all processes", group="training"
    )
    parallel: str = option(
        "ddp", "under torchrun: ddp (replicas) or fsdp (decoder layers sharded)", choices=PARALLEL, group="training"
    )
    max_new_tokens: int = option(24, "tokens generated per answer (utility targets, evaluation)", group="evaluation")
    eval_limit: int = option(32, "held-out prompts (and benign prompts) in the report (0: all)", group="evaluation")
    eval_eps: list[float] = option([0.05], "embedding-attack radii in the report (empty: none)", group="evaluation")
    eval_steps: int = option(20, "embedding-attack steps in the report", group="evaluation")
    report: bool = option(True, "write report.json / report.md / plots at the end", group="evaluation")
    out: str = option("runs/llm", "run folder: every file the job writes goes here, and nowhere else")

    def validate(self) -> None:
        super().validate()
        check_choice("method", self.method, METHODS)
        check_choice("finetune", self.finetune, FINETUNES)
        check_choice("parallel", self.parallel, PARALLEL)
        check_choice("norm", self.norm, NORMS)
        check_choice("region", self.region, REGIONS)
        check_choice("dtype", self.dtype, tuple(DTYPES))
        if self.norm == "unconstrained":
            raise ValueError("norm unconstrained has no ball to train against; use l2-per-token or linf-per-token")
        check_real("eps", self.eps, low=0.0)
        for name in ("train_size", "attack_steps", "lora_r", "lora_alpha", "max_new_tokens", "eval_steps"):
            check_count(name, getattr(self, name))
        check_count("eval_limit", self.eval_limit, minimum=0)
        check_count("val_size", self.val_size, minimum=0)
        if self.alpha is not None:
            check_real("alpha", self.alpha, low=0.0, low_open=True)
        for name in ("toward_weight", "away_weight", "utility_weight", "weight_decay"):
            check_real(name, getattr(self, name), low=0.0)
        check_real("lr", self.lr, low=0.0, low_open=True)
        check_real("toward_cutoff", self.toward_cutoff)
        check_real("away_cutoff", self.away_cutoff)
        if not isinstance(self.eval_eps, list):
            raise ValueError(f"eval_eps must be a list of radii, got {self.eval_eps!r}")
        for e in self.eval_eps:
            check_real("eval_eps", e, low=0.0)
