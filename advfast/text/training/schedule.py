"""The learning-rate schedule of Hugging Face fine-tuning: linear warm-up from 0, then linear decay to 0."""

from __future__ import annotations


class LinearWarmupDecay:
    """``factor(t) = t / W`` for ``t < W``, then ``(T - t) / (T - W)`` (never below 0), for step ``t`` of ``T``
    with ``W = warmup_steps``; the multiplier of :class:`torch.optim.lr_scheduler.LambdaLR`. A plain object (not
    a lambda), so the scheduler's state dict holds its two numbers."""

    def __init__(self, warmup_steps: int, total_steps: int) -> None:
        self.warmup_steps = int(warmup_steps)
        self.total_steps = max(int(total_steps), 1)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / self.warmup_steps
        return max(0.0, (self.total_steps - step) / max(1, self.total_steps - self.warmup_steps))
