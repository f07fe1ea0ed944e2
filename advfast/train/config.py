"""Everything a training run needs, in one serialisable record (``config.json`` reruns the run)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from advfast.train.objectives import OBJECTIVES
from advfast.train.schedules import SCHEDULES

OPTIMIZERS = ("sgd", "adam")
AMP_MODES = ("off", "bf16", "fp16")
NORMS = ("linf", "l2")


@dataclass
class TrainConfig:
    """A training run. ``eps``/``alpha`` are in input units (images in [0, 1]); ``alpha`` defaults per method
    (PGD: 2.5 eps / steps, FGSM-RS: 1.25 eps, FGSM in ``mixed``: eps, free: eps)."""

    data: str = "digits"
    subset: float = 1.0
    model: str = "auto"
    method: str = "pgd"
    eps: float = 0.3
    alpha: float | None = None
    steps: int = 10
    norm: str = "linf"
    lam: float = 1.0
    inner: str = "fgsm"
    beta: float = 6.0
    replays: int = 8
    attack_mode: str = "auto"  # "as_is" (the model's train mode, BatchNorm statistics restored) or "eval"
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    eps_warmup: float = 0.0  # fraction of training over which eps ramps linearly from 0
    accumulate: int = 1
    amp: str = "off"
    seed: int = 0
    checkpoint_every: int = 0  # optimizer steps between checkpoints (0: at the end of each epoch only)
    max_steps: int = 0  # stop (with a checkpoint) after this many optimizer steps; 0: no limit
    val_size: int = 1000
    val_steps: int = 10
    overfit_guard: float = math.nan  # PGD-accuracy drop that stops training; NaN: 0.2 for fgsm-rs, else off
    augment: str = ""  # a generator checkpoint (advfast augment) whose samples join every batch
    synthetic_ratio: float = 0.5  # share of synthetic samples in each (augmented) batch, in [0, 1)
    synthetic_adversarial: bool = False  # make the synthetic samples adversarial (PGD, eps) first
    eval_eps: list[float] = field(default_factory=list)  # final report; empty: eps/3, 2eps/3, eps
    eval_steps: int = 40
    eval_restarts: int = 1
    report: bool = True
    out: str = "runs/run"
    device: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Errors name the argument."""

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        need(self.method in OBJECTIVES, f"method must be one of {sorted(OBJECTIVES)}, got {self.method!r}")
        need(math.isfinite(self.eps) and self.eps >= 0, f"eps must be finite and >= 0, got {self.eps}")
        need(
            self.alpha is None or (math.isfinite(self.alpha) and self.alpha > 0),
            f"alpha must be > 0, got {self.alpha}",
        )
        need(self.norm in NORMS, f"norm must be one of {NORMS}, got {self.norm!r}")
        for name in (
            "steps",
            "epochs",
            "batch_size",
            "accumulate",
            "replays",
            "val_steps",
            "eval_steps",
            "eval_restarts",
        ):
            value = getattr(self, name)
            need(
                isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                f"{name} must be an integer >= 1, got {value!r}",
            )
        for name in ("checkpoint_every", "max_steps", "val_size", "seed"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 0, f"{name} must be an integer >= 0, got {value!r}")
        need(0.0 < self.subset <= 1.0, f"subset must be in (0, 1], got {self.subset}")
        need(self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        need(math.isfinite(self.lr) and self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {sorted(SCHEDULES)}, got {self.schedule!r}")
        need(0.0 <= self.eps_warmup <= 1.0, f"eps_warmup must be in [0, 1], got {self.eps_warmup}")
        need(self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        need(self.attack_mode in ("auto", "as_is", "eval"), "attack_mode must be auto, as_is or eval")
        need(self.lam >= 0, f"lam must be >= 0, got {self.lam}")
        need(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
        need(self.inner in ("fgsm", "pgd"), f'inner must be "fgsm" or "pgd", got {self.inner!r}')
        need(
            all(math.isfinite(e) and e >= 0 for e in self.eval_eps),
            f"eval_eps must be >= 0, got {self.eval_eps}",
        )
        need(0.0 <= self.synthetic_ratio < 1.0, f"synthetic_ratio must be in [0, 1), got {self.synthetic_ratio}")
        need(
            not (self.method == "free" and self.accumulate > 1),
            "accumulate > 1 is not supported with method free (each replay is its own optimizer step)",
        )

    @property
    def resolved_attack_mode(self) -> str:
        """TRADES crafts its examples in eval mode (as in the paper); the others in the model's train mode."""
        if self.attack_mode != "auto":
            return self.attack_mode
        return "eval" if self.method == "trades" else "as_is"

    @property
    def resolved_overfit_guard(self) -> float | None:
        if math.isnan(self.overfit_guard):
            return 0.2 if self.method == "fgsm-rs" else None
        return self.overfit_guard if self.overfit_guard > 0 else None

    @property
    def resolved_eval_eps(self) -> list[float]:
        return list(self.eval_eps) or [round(self.eps * k / 3, 6) for k in (1, 2, 3)]

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        if math.isnan(record["overfit_guard"]):
            record["overfit_guard"] = None
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise ValueError(f"unknown config fields: {unknown}")
        record = dict(record)
        if record.get("overfit_guard") is None:
            record["overfit_guard"] = math.nan
        return cls(**record)
