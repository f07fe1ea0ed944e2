"""Free adversarial training (Shafahi et al., 2019): each minibatch is replayed m times; every replay's one
backward pass gives both the parameter gradient (an optimizer step) and the input gradient (an FGSM step of
size eps on the perturbation), and the perturbation carries over to the next minibatch:

    x' = clip(x + d);  loss = l(f(x'), y);  theta <- theta - lr grad_theta;  d <- clip(d + eps sign(grad_x'), -eps, eps)

m replays cost m forward/backward passes, so ``epochs / m`` epochs cost about as much as standard training."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from advfast import ops
from advfast.checks import check_count
from advfast.train.objectives.base import AttackSettings, BatchLoss, Objective


class Free(Objective):
    name = "free"

    def __init__(self, attack: AttackSettings, replays: int = 8) -> None:
        super().__init__(attack)
        self.replays = check_count("replays", replays)
        self._delta: Tensor | None = None
        self._pending: tuple[Tensor, Tensor, float] | None = None

    @classmethod
    def from_config(cls, config: Any) -> Free:
        return cls(AttackSettings.from_config(config), replays=config.replays)

    def compute(self, model, attacker, x, y, eps, generator) -> BatchLoss:
        lo, hi = self.attack.bounds
        if self._delta is None or self._delta.shape != x.shape or self._delta.device != x.device:
            self._delta = torch.zeros_like(x)
        x_adv = torch.clamp(x + self._delta, lo, hi).requires_grad_(True)
        logits = model(x_adv)
        self._pending = (x_adv, x, eps)
        return BatchLoss(nn.functional.cross_entropy(logits, y), logits.detach())

    def after_backward(self) -> None:
        """The input gradient of the backward just taken moves the carried perturbation."""
        assert self._pending is not None, "after_backward() must follow a call"
        x_adv, x, eps = self._pending
        self._pending = None
        if x_adv.grad is None:
            raise RuntimeError("free training: the loss did not reach the input; is the model detaching it?")
        lo, hi = self.attack.bounds
        step = ops.linf_step_ if self.attack.norm == "linf" else ops.l2_step_
        moved = step(x_adv.detach().clone(), x_adv.grad, x, eps, eps, lo, hi)
        self._delta = moved - x

    def state_dict(self) -> dict[str, Any]:
        return {"delta": self._delta}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._delta = state.get("delta")
