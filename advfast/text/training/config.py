"""Everything a text-classifier fine-tuning run needs, in one serialisable record (``config.json`` reruns it).

The method's options (``eps``, ``alpha``, ``steps``, ``norm``, ``init_mag``, ``weight``, ``include_clean``)
default to ``None``:
the method's own default (each adversary's documented reference setting). The trainer saves the values the
adversary used, so ``config.json`` holds the numbers of the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from advfast.checks import check_choice, check_count, check_real, require
from advfast.runtime.config import RunConfig, option
from advfast.text.adversaries import ADVERSARIES

METHODS = ("standard", *ADVERSARIES)
NORMS = ("l2", "linf")

# The options each method takes (keyword arguments of its adversary, by the same names).
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "standard": (),
    "fgm": ("eps", "norm", "include_clean"),
    "pgd": ("eps", "alpha", "steps", "norm", "include_clean"),
    "freelb": ("eps", "alpha", "steps", "norm", "init_mag"),
    "smart": ("eps", "alpha", "steps", "norm", "weight"),
    "r3f": ("eps", "weight"),
}
ALL_METHOD_OPTIONS = ("eps", "alpha", "steps", "norm", "init_mag", "weight", "include_clean")


@dataclass
class TextTrainConfig(RunConfig):
    """Fine-tuning a transformer classifier (AdamW, linear warm-up then linear decay, gradient clipping: the
    usual Hugging Face recipe), with an embedding-space adversary. ``eps``/``alpha`` are in embedding units
    (the L2 norm of a sequence's perturbation of the word embeddings, unless the norm is linf)."""

    job = "text training"

    data: str = option(
        "rotten-tomatoes", "rotten-tomatoes, imdb, bbc-news, or a .csv / .jsonl file of (text, label) rows",
        group="data",
    )  # fmt: skip
    text_column: str = option("text", "the text column of a .csv / .jsonl file", group="data")
    label_column: str = option("label", "the label column of a .csv / .jsonl file", group="data")
    model: str = option("minilm", "minilm, or a local from_pretrained folder (a fresh classification head)",
                        group="data")  # fmt: skip
    split_seed: int | None = option(
        None, "seeds the train/validation/test split (fix it to compare runs of different --seed on one test set)",
        group="data", auto="the run's --seed",
    )  # fmt: skip
    max_length: int = option(128, "tokens per text at most (batches are padded to their longest)", group="data")
    method: str = option("freelb", "fine-tuning method", choices=METHODS, group="method")
    eps: float | None = option(
        None, "perturbation radius in embedding units", group="method",
        auto="the method's: fgm 1, pgd 1, freelb 0.6, smart 0.05, r3f 1e-5 (its noise half-width)",
    )  # fmt: skip
    alpha: float | None = option(
        None, "ascent step size (pgd, freelb, smart)", group="method", auto="pgd 2.5 eps/steps, freelb 0.1, smart 1e-3"
    )
    steps: int | None = option(None, "ascent steps K (pgd, freelb, smart)", group="method",
                               auto="pgd 3, freelb 3, smart 1")  # fmt: skip
    norm: str | None = option(None, "norm of the perturbation (fgm, pgd, freelb, smart)", choices=NORMS,
                              group="method", auto="l2 per sequence; smart linf per token")  # fmt: skip
    init_mag: float | None = option(None, "freelb: magnitude of the random initial perturbation", group="method",
                                    auto="1")  # fmt: skip
    weight: float | None = option(None, "smart, r3f: weight of the smoothness (symmetric KL) term", group="method",
                                  auto="1")  # fmt: skip
    include_clean: bool | None = option(
        None, "fgm, pgd: train on the clean loss plus the adversarial one (--no-include-clean: adversarial only)",
        group="method", auto="fgm yes, pgd no",
    )  # fmt: skip
    epochs: int = option(3, "training epochs", group="training")
    batch_size: int = option(32, "samples per optimizer step, over all processes", group="training")
    lr: float = option(5e-5, "peak learning rate of AdamW", group="training")
    weight_decay: float = option(0.01, "AdamW weight decay (not on biases and LayerNorm weights)", group="training")
    warmup: float = option(0.1, "fraction of the steps over which the learning rate rises linearly from 0 (then "
                           "it decays linearly to 0)", group="training")  # fmt: skip
    max_grad_norm: float = option(1.0, "clip the gradient's norm to this (0: no clipping)", group="training")
    val_size: int = option(1000, "validation examples for the per-epoch accuracy (0: none)", group="evaluation")
    eval_eps: list[float] = option([0.5, 1.0, 2.0], "embedding-PGD radii of the final test report", group="evaluation")
    eval_norm: str = option("l2", "embedding-PGD norm of the final test report", choices=NORMS, group="evaluation")
    eval_steps: int = option(20, "embedding-PGD steps of the final test report", group="evaluation")
    eval_restarts: int = option(5, "embedding-PGD restarts of the final test report", group="evaluation")
    eval_budgets: list[int] = option([1, 2], "token-substitution budgets (tokens changed) of the final test report",
                                     group="evaluation")  # fmt: skip
    eval_candidates: int = option(8, "token substitution: candidate tokens checked per position and round",
                                  group="evaluation")  # fmt: skip
    eval_limit: int = option(0, "the final test report on the first N test examples only (0: all)",
                             group="evaluation")  # fmt: skip
    report: bool = option(True, "write the test report (report.json, report.md, plots) at the end", group="evaluation")
    out: str = option("runs/text", "run folder: every file the job writes goes here, and nowhere else")

    def validate(self) -> None:
        super().validate()
        check_choice("method", self.method, METHODS)
        for name in ("data", "text_column", "label_column", "model"):
            value = getattr(self, name)
            require(isinstance(value, str) and value != "", f"{name} must be a non-empty string, got {value!r}")
        if self.split_seed is not None:
            check_count("split_seed", self.split_seed, minimum=0)
        check_count("max_length", self.max_length, minimum=2)
        if self.eps is not None:
            check_real("eps", self.eps, low=0.0)
        if self.alpha is not None:
            check_real("alpha", self.alpha, low=0.0, low_open=True)
        if self.steps is not None:
            check_count("steps", self.steps)
        if self.norm is not None:
            check_choice("norm", self.norm, NORMS)
        if self.init_mag is not None:
            check_real("init_mag", self.init_mag, low=0.0)
        if self.weight is not None:
            check_real("weight", self.weight, low=0.0)
        if self.include_clean is not None:
            require(
                isinstance(self.include_clean, bool), f"include_clean must be true or false, got {self.include_clean!r}"
            )
        unused = [name for name in ALL_METHOD_OPTIONS if getattr(self, name) is not None]
        unused = [name for name in unused if name not in METHOD_OPTIONS[self.method]]
        require(
            not unused,
            f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to method {self.method} "
            f"(its options: {', '.join(METHOD_OPTIONS[self.method]) or 'none'})",
        )
        check_real("lr", self.lr, low=0.0, low_open=True)
        check_real("weight_decay", self.weight_decay, low=0.0)
        check_real("warmup", self.warmup, low=0.0, high=1.0)
        check_real("max_grad_norm", self.max_grad_norm, low=0.0)
        check_count("val_size", self.val_size, minimum=0)
        require(
            isinstance(self.eval_eps, list) and len(self.eval_eps) > 0,
            f"eval_eps must list at least one radius, got {self.eval_eps!r}",
        )
        for value in self.eval_eps:
            check_real("eval_eps", value, low=0.0)
        check_choice("eval_norm", self.eval_norm, NORMS)
        require(
            isinstance(self.eval_budgets, list) and len(self.eval_budgets) > 0,
            f"eval_budgets must list at least one budget, got {self.eval_budgets!r}",
        )
        for value in self.eval_budgets:
            check_count("eval_budgets", value)
        for name in ("eval_steps", "eval_restarts", "eval_candidates"):
            check_count(name, getattr(self, name))
        check_count("eval_limit", self.eval_limit, minimum=0)

    def adversary_options(self) -> dict[str, Any]:
        """The options the user set for the method (the others take the adversary's defaults)."""
        return {name: getattr(self, name) for name in METHOD_OPTIONS[self.method] if getattr(self, name) is not None}

    def resolve(self, adversary: object) -> TextTrainConfig:
        """This config with the method's options as ``adversary`` holds them (its defaults filled in)."""
        values = {}
        for name in METHOD_OPTIONS[self.method]:
            value = getattr(adversary, name, None)
            if isinstance(value, float) and not math.isfinite(value):
                continue  # an unbounded radius stays "automatic" (JSON has no inf)
            if value is not None:
                values[name] = value
        return replace(self, **values)
