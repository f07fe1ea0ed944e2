"""Everything an image-classifier training run needs, in one serialisable record (``config.json`` reruns it).

Automatic values are ``None`` (``auto`` on the command line); the trainer resolves them once, from the data
and the method, and saves the resolved record, so ``config.json`` always holds the numbers the run used.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from advfast.checks import check_choice, check_count, check_real, require
from advfast.eval.attacks import ATTACKS
from advfast.runtime.config import RunConfig, option
from advfast.train.objectives import OBJECTIVES
from advfast.train.objectives.fgsm_rs import STARTS
from advfast.train.schedules import SCHEDULES

OPTIMIZERS = ("sgd", "adam")
AMP_MODES = ("off", "bf16", "fp16")
NORMS = ("linf", "l2")
MODEL_MODES = ("as_is", "eval")
INNER_ATTACKS = ("fgsm", "pgd")


@dataclass
class TrainConfig(RunConfig):
    """A training run. ``eps``/``alpha`` are in input units (images in [0, 1])."""

    job = "training"

    data: str = option(
        "digits", "digits, mnist, fashion-mnist, a .npz file (x, y) or a folder of class sub-folders", group="data"
    )
    subset: float = option(1.0, "keep this fraction of the training split (stratified)", group="data")
    model: str | None = option(
        None, "digits-cnn, mnist-cnn, mnist-cnn-small or cnn", group="data", auto="by input size"
    )
    method: str = option("pgd", "training objective", choices=tuple(OBJECTIVES), group="method")
    eps: float | None = option(
        None, "attack radius in input units (images in [0, 1])", group="method",
        auto="the data set's standard radius: digits 0.1, mnist 0.3, fashion-mnist 0.1 (L-inf), others 8/255",
    )  # fmt: skip
    alpha: float | None = option(
        None, "attack step size", group="method", auto="PGD 2.5 eps/steps, FGSM-RS 1.25 eps, FGSM, N-FGSM and free eps"
    )
    steps: int = option(10, "attack steps (pgd, trades, and mixed with --inner pgd)", group="method")
    norm: str = option("linf", "threat model: L-inf or L2 ball", choices=NORMS, group="method")
    lam: float = option(1.0, "mixed: weight of the adversarial loss", group="method")
    inner: str = option("fgsm", "mixed: the attack that makes the adversarial half", choices=INNER_ATTACKS,
                        group="method")  # fmt: skip
    beta: float = option(6.0, "trades: weight of the KL term", group="method")
    replays: int = option(8, "free: replays of each minibatch", group="method")
    noise: float = option(2.0, "n-fgsm: half-width of the uniform noise, as a multiple of eps", group="method")
    align: float = option(0.2, "grad-align: weight of the gradient-alignment term", group="method")
    start: str = option(
        "ball", "fgsm-rs: the random start, uniform in the whole eps-ball (Wong et al.'s code: the gradient may be "
        "taken outside the input range; the example never is), or clipped to the input range first",
        choices=STARTS, group="method",
    )  # fmt: skip
    model_mode: str | None = option(
        None, "the model's mode while the attack crafts examples: as_is (train mode, BatchNorm statistics "
        "restored) or eval", choices=MODEL_MODES, group="method", auto="eval for trades, else as_is",
    )  # fmt: skip
    optimizer: str = option("adam", "optimizer", choices=OPTIMIZERS, group="training")
    lr: float = option(1e-3, "peak learning rate", group="training")
    momentum: float = option(0.9, "sgd: momentum", group="training")
    weight_decay: float = option(0.0, "weight decay", group="training")
    schedule: str = option("cosine", "learning-rate schedule", choices=tuple(SCHEDULES), group="training")
    eps_warmup: float = option(
        0.3, "fraction of training over which eps ramps up linearly from 0 (training at the full radius from "
        "the first step can collapse to a constant predictor)", group="training",
    )  # fmt: skip
    accumulate: int = option(1, "batches per optimizer step (gradient accumulation)", group="training")
    amp: str = option("off", "mixed precision (fp16 on CUDA only)", choices=AMP_MODES, group="training")
    overfit_guard: float | None = option(
        None, "stop and restore the best epoch when validation PGD accuracy falls this far below its best "
        "(catastrophic overfitting; 0: off)", group="training", auto="0.2 for fgsm-rs, else off",
    )  # fmt: skip
    augment: str | None = option(
        None, "a generator checkpoint (advfast augment) whose samples join every batch", group="augmentation"
    )
    synthetic_ratio: float = option(0.5, "share of generated samples in each augmented batch, in [0, 1)",
                                    group="augmentation")  # fmt: skip
    synthetic_adversarial: bool = option(
        False, "make the generated samples adversarial (PGD at eps) before training on them", group="augmentation"
    )
    val_size: int = option(1000, "validation samples for the per-epoch clean and PGD accuracy", group="evaluation")
    val_steps: int = option(10, "PGD steps of the per-epoch validation", group="evaluation")
    eval_eps: list[float] | None = option(
        None, "radii of the final test report", group="evaluation", auto="eps/3, 2 eps/3, eps"
    )
    eval_attacks: list[str] = option(
        ["fgsm", "pgd"], "attacks of the final test report (autoattack: APGD-CE, APGD-T and Square, the field's "
        "standard)", choices=tuple(ATTACKS), group="evaluation",
    )  # fmt: skip
    eval_steps: int = option(40, "PGD steps of the final test report", group="evaluation")
    eval_restarts: int = option(1, "PGD restarts of the final test report", group="evaluation")
    report: bool = option(True, "write the test report (report.json, report.md, plots) at the end", group="evaluation")

    def validate(self) -> None:
        super().validate()
        check_choice("method", self.method, OBJECTIVES)
        check_real("subset", self.subset, low=0.0, high=1.0, low_open=True)
        if self.eps is not None:
            check_real("eps", self.eps, low=0.0)
        if self.alpha is not None:
            check_real("alpha", self.alpha, low=0.0, low_open=True)
        check_choice("norm", self.norm, NORMS)
        for name in ("steps", "accumulate", "replays", "val_steps", "eval_steps", "eval_restarts"):
            check_count(name, getattr(self, name))
        check_count("val_size", self.val_size, minimum=0)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_real("lr", self.lr, low=0.0, low_open=True)
        check_real("momentum", self.momentum, low=0.0, high=1.0)
        check_real("weight_decay", self.weight_decay, low=0.0)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_real("eps_warmup", self.eps_warmup, low=0.0, high=1.0)
        check_choice("amp", self.amp, AMP_MODES)
        if self.model_mode is not None:
            check_choice("model_mode", self.model_mode, MODEL_MODES)
        check_real("lam", self.lam, low=0.0)
        check_real("beta", self.beta, low=0.0)
        check_real("noise", self.noise, low=0.0)
        check_real("align", self.align, low=0.0)
        check_choice("inner", self.inner, INNER_ATTACKS)
        check_choice("start", self.start, STARTS)
        if self.overfit_guard is not None:
            check_real("overfit_guard", self.overfit_guard, low=0.0, high=1.0)
        if self.eval_eps is not None:
            require(
                isinstance(self.eval_eps, list) and len(self.eval_eps) > 0,
                f"eval_eps must list at least one radius, got {self.eval_eps!r}",
            )
            for value in self.eval_eps:
                check_real("eval_eps", value, low=0.0)
        require(
            isinstance(self.eval_attacks, list) and len(self.eval_attacks) > 0,
            f"eval_attacks must list at least one attack, got {self.eval_attacks!r}",
        )
        for name in self.eval_attacks:
            check_choice("eval_attacks", name, ATTACKS)
        check_real("synthetic_ratio", self.synthetic_ratio, low=0.0, high=1.0, high_open=True)
        require(
            not (self.method == "free" and self.accumulate > 1),
            "accumulate > 1 is not supported with method free (each replay is its own optimizer step)",
        )
        require(
            self.augment is None or (isinstance(self.augment, str) and self.augment != ""),
            f"augment must name a generator checkpoint, got {self.augment!r}",
        )

    # ---- automatic values, resolved ---------------------------------------------------------------------

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> TrainConfig:
        """As :meth:`RunConfig.from_dict`; a record written before ``start`` existed used the clipped start, so
        its run resumes with it."""
        if isinstance(record, dict) and "start" not in record:
            record = {**record, "start": "clipped"}
        return super().from_dict(record)

    def resolve(self, *, eps: float, model: str) -> TrainConfig:
        """This config with every automatic value decided: ``eps`` and ``model`` from the data (when they are
        None), the model's mode in the attack (eval for TRADES, as in the paper; else the train mode), the
        overfitting guard (0.2 for fgsm-rs, else off) and the report's radii (eps/3, 2 eps/3, eps)."""
        eps = self.eps if self.eps is not None else eps
        return replace(
            self,
            eps=eps,
            model=self.model if self.model is not None else model,
            model_mode=self.model_mode or ("eval" if self.method == "trades" else "as_is"),
            overfit_guard=self.overfit_guard if self.overfit_guard is not None else (
                0.2 if self.method == "fgsm-rs" else 0.0),
            eval_eps=list(self.eval_eps) if self.eval_eps is not None else [round(eps * k / 3, 6) for k in (1, 2, 3)],
        )  # fmt: skip
