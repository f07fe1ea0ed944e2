"""Losses of the text adversaries, all computed in float32 whatever the logits' dtype. Logits are [B, C]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """``mean_b -log softmax(z_b)_{y_b}``."""
    return F.cross_entropy(logits.float(), labels)


def cross_entropy_sum(logits: Tensor, labels: Tensor) -> Tensor:
    """``sum_b -log softmax(z_b)_{y_b}``: the ascent objective (a sample's gradient does not depend on B)."""
    return F.cross_entropy(logits.float(), labels, reduction="sum")


def _kl(log_q: Tensor, p: Tensor) -> Tensor:
    """``sum_b KL(p_b || q_b)`` from log q and p."""
    return F.kl_div(log_q, p, reduction="sum")


def symmetric_kl(noised: Tensor, clean: Tensor) -> Tensor:
    """R3F's term (fairseq ``_get_symm_kl``): ``(1/B) sum_b [KL(p_b || q_b) + KL(q_b || p_b)]`` with
    ``p = softmax(clean)``, ``q = softmax(noised)``; gradients flow through both sides."""
    p_log, q_log = F.log_softmax(clean.float(), dim=-1), F.log_softmax(noised.float(), dim=-1)
    return (_kl(q_log, p_log.exp()) + _kl(p_log, q_log.exp())) / noised.shape[0]


def smart_symmetric_kl(clean: Tensor, adversarial: Tensor) -> Tensor:
    """SMART's smoothness term (mt-dnn ``SymKlCriterion(logits, adv_logits)``):
    ``(1/B) sum_b [KL(sg(q_b) || p_b) + KL(sg(p_b) || q_b)]``, ``p = softmax(clean)``, ``q = softmax(adversarial)``;
    each KL's target distribution is detached, so the first term trains the clean pass, the second the
    adversarial one."""
    p_log, q_log = F.log_softmax(clean.float(), dim=-1), F.log_softmax(adversarial.float(), dim=-1)
    return (_kl(p_log, q_log.detach().exp()) + _kl(q_log, p_log.detach().exp())) / clean.shape[0]


def stable_kl(adversarial: Tensor, target: Tensor, tiny: float = 1e-6) -> Tensor:
    """SMART's ascent objective (mt-dnn ``stable_kl(adv_logits, logits.detach(), reduce=False)``), summed over
    the batch: ``sum_b sum_c 2 p_bc (r(p_bc) - r(y_bc))`` with ``p = softmax(adversarial)``, ``y = softmax(target)``
    and the detached log-odds ``r(v) = -log(1/(v + tiny) - 1 + tiny)``."""
    p = F.log_softmax(adversarial.float(), dim=-1).exp()  # the reference's op order (exp of log-softmax)
    y = F.log_softmax(target.float(), dim=-1).exp()
    r_p = -torch.log(1.0 / (p + tiny) - 1.0 + tiny).detach()
    r_y = -torch.log(1.0 / (y + tiny) - 1.0 + tiny).detach()
    return (p * (r_p - r_y) * 2.0).sum()
