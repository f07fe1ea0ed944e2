"""What an adversarial-training objective is: one call per batch returns the loss to minimise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn


@dataclass
class BatchLoss:
    """``loss``: the scalar to back-propagate; ``logits``: detached logits of the inputs the model was trained
    on (the adversarial ones where there are), for the training accuracy."""

    loss: Tensor
    logits: Tensor


@dataclass
class AttackSettings:
    """How an objective perturbs its inputs. ``alpha`` is the step at the full ``eps``; while eps ramps up it
    is scaled with it. ``model_mode`` is the attack's (see :func:`advfast.pgd`)."""

    eps: float
    alpha: float | None = None
    steps: int = 10
    norm: str = "linf"
    bounds: tuple[float, float] = (0.0, 1.0)
    model_mode: str = "as_is"

    def alpha_at(self, eps: float, default_scale: float) -> float | None:
        """The step size at the current (possibly ramped) eps; ``default_scale * eps`` when unset; None at
        eps 0 (the attacks then choose, and nothing moves)."""
        if eps <= 0:
            return None
        if self.alpha is None:
            return default_scale * eps
        return self.alpha * (eps / self.eps) if self.eps > 0 else self.alpha

    @classmethod
    def from_config(cls, config: Any) -> AttackSettings:
        """From a training config (any object with eps, alpha, steps, norm and model_mode, resolved)."""
        return cls(eps=config.eps, alpha=config.alpha, steps=config.steps, norm=config.norm,
                   model_mode=config.model_mode)  # fmt: skip


class Objective:
    """Base class. ``replays`` > 1 makes the trainer take that many optimizer steps per batch (free AT)."""

    name: ClassVar[str]
    replays: int = 1
    norms: ClassVar[tuple[str, ...] | None] = None  # the threat models the method is defined for; None: any

    def __init__(self, attack: AttackSettings) -> None:
        if attack.eps < 0:
            raise ValueError(f"eps must be >= 0, got {attack.eps}")
        if self.norms is not None and attack.norm not in self.norms:
            raise ValueError(
                f"{self.name} is defined for {', '.join(self.norms)} only; norm must be one of them, "
                f"got {attack.norm!r}"
            )
        self.attack = attack

    @classmethod
    def from_config(cls, config: Any) -> Objective:
        """The objective a training config asks for, with its own hyper-parameters read from the config
        (objectives with some override this)."""
        return cls(AttackSettings.from_config(config))

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        eps: float | None = None,
        generator: torch.Generator | None = None,
        attack_model: nn.Module | None = None,
    ) -> BatchLoss:
        """The batch's loss, to back-propagate.

        ``model`` is trained (it may be a DistributedDataParallel wrapper: it runs one forward per call);
        ``attack_model`` (default: ``model``) crafts the adversarial inputs, which need input gradients only,
        so under DDP it is the wrapped module and no gradient sync happens. ``eps`` overrides the settings'
        radius (the trainer ramps it up); ``generator`` seeds the attack's random starts.
        """
        eps = self.attack.eps if eps is None else eps
        attacker = model if attack_model is None else attack_model
        return self.compute(model, attacker, x, y, eps, generator)

    def compute(
        self,
        model: nn.Module,
        attacker: nn.Module,
        x: Tensor,
        y: Tensor,
        eps: float,
        generator: torch.Generator | None,
    ) -> BatchLoss:
        raise NotImplementedError

    def after_backward(self) -> None:
        """Called after ``loss.backward()`` and before the optimizer step."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


class Standard(Objective):
    """Standard training: ``min E[ l(f(x), y) ]`` (the baseline every robust method is compared with)."""

    name = "standard"

    def compute(self, model, attacker, x, y, eps, generator) -> BatchLoss:
        logits = model(x)
        return BatchLoss(nn.functional.cross_entropy(logits, y), logits.detach())
