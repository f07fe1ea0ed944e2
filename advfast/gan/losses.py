"""The generative models' losses, as formulas on logits (numerically stable forms)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def generator_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss ``L_G = -E[log D(G(z))] = E[softplus(-logit)]`` (D = sigmoid(logit))."""
    return F.softplus(-fake_logits).mean()


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, real_target: float = 1.0) -> Tensor:
    """``L_D = -E[ t log D(x) + (1 - t) log(1 - D(x)) ] - E[ log(1 - D(G(z))) ]`` with real target t: 1, or
    0.9 for one-sided label smoothing (Salimans et al., 2016: only the real side is smoothed)."""
    real = F.binary_cross_entropy_with_logits(real_logits, real_logits.new_full(real_logits.shape, real_target))
    fake = F.softplus(fake_logits).mean()  # -log(1 - sigmoid(l)) = softplus(l)
    return real + fake


def vae_loss(reconstruction: Tensor, x: Tensor, mu: Tensor, log_var: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Negative ELBO per sample, averaged: Bernoulli reconstruction ``-sum[x log r + (1-x) log(1-r)]`` plus
    ``KL(N(mu, sigma^2) || N(0, I)) = -1/2 sum(1 + log sigma^2 - mu^2 - sigma^2)``. Returns (total, recon, kl)."""
    batch = x.shape[0]
    recon = F.binary_cross_entropy(reconstruction.clamp(1e-6, 1 - 1e-6), x, reduction="sum") / batch
    kl = -0.5 * (1 + log_var - mu.pow(2) - log_var.exp()).sum() / batch
    return recon + kl, recon, kl


def mode_seeking_term(fake_a: Tensor, fake_b: Tensor, z_a: Tensor, z_b: Tensor, eps: float = 1e-5) -> Tensor:
    """Mode-seeking regulariser (Mao et al., 2019, MSGAN): with m = mean|G(z_a, y) - G(z_b, y)| /
    mean|z_a - z_b| over pairs that share their labels, the generator adds ``1 / (m + eps)`` to its loss, so
    that ignoring z (every sample of a class the same image: conditional mode collapse) costs it."""
    ratio = (fake_a - fake_b).abs().mean() / (z_a - z_b).abs().mean()
    return 1.0 / (ratio + eps)
