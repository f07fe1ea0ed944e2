"""Class-conditional networks for any image shape (C, H, W) and class count: a DCGAN generator and
discriminator, and a convolutional VAE encoder/decoder. Images are in [0, 1]."""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


def upsampling_plan(height: int, width: int, max_doublings: int = 3) -> tuple[int, int, int]:
    """(doublings, base height, base width): the largest k <= max_doublings with H and W divisible by 2^k, so
    the generator grows a base grid of H/2^k x W/2^k by k stride-2 transposed convolutions."""
    k = 0
    while k < max_doublings and height % 2 ** (k + 1) == 0 and width % 2 ** (k + 1) == 0:
        k += 1
    return k, height // 2**k, width // 2**k


def _widths(k: int, base: int) -> list[int]:
    """Channel widths from the base grid up (halving at each doubling), at least 16."""
    return [max(16, base // 2**i) for i in range(k + 1)]


class ConditionalGenerator(nn.Module):
    """DCGAN generator G(z, y): [z, sqrt(d) one_hot(y)] -> linear -> base grid -> k x (transposed conv
    stride 2, BN, ReLU) -> 3x3 conv -> sigmoid, so samples lie in [0, 1] like the data. The label enters as a
    one-hot vector scaled to the norm of z (d = latent size): fixed, so it cannot outgrow z as a learned
    embedding did (the generator then ignored z: one image per class), yet as strong as z from the start."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, latent_dim: int = 64, width: int = 64):
        super().__init__()
        channels, height, width_px = input_shape
        self.input_shape, self.num_classes, self.latent_dim = tuple(input_shape), num_classes, latent_dim
        k, self.base_h, self.base_w = upsampling_plan(height, width_px)
        widths = _widths(k, width)
        self.project = nn.Sequential(
            nn.Linear(latent_dim + num_classes, widths[0] * self.base_h * self.base_w),
            nn.BatchNorm1d(widths[0] * self.base_h * self.base_w),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(widths):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        layers += [nn.Conv2d(widths[-1], channels, 3, padding=1), nn.Sigmoid()]
        self.body = nn.Sequential(*layers)
        self.base_channels = widths[0]

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        label = nn.functional.one_hot(y, self.num_classes).to(z.dtype) * math.sqrt(self.latent_dim)
        h = self.project(torch.cat([z, label], dim=1))
        return self.body(h.view(-1, self.base_channels, self.base_h, self.base_w))


class ProjectionDiscriminator(nn.Module):
    """Class-conditional discriminator with a projection head (Miyato & Koyama, 2018):
    ``D(x, y) = w . phi(x) + embed(y) . phi(x)`` (a logit), phi a spectrally normalised strided CNN whose
    final feature map is flattened (not pooled: where a stroke is matters)."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: int = 32):
        super().__init__()
        channels, height, width_px = input_shape
        # Halve the grid while it stays at least 4x4 (at least once): the head then sees a coarse map, not 1x1.
        coarsest = int(math.log2(max(min(height, width_px), 4) / 4))
        doublings = max(1, min(upsampling_plan(height, width_px)[0], coarsest))
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(channels, width, 3, padding=1)), nn.LeakyReLU(0.2)]
        c, h, w = width, height, width_px
        for _ in range(doublings):
            layers += [spectral_norm(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            c, h, w = 2 * c, h // 2, w // 2
        layers += [nn.Flatten()]
        self.features = nn.Sequential(*layers)
        features = c * h * w
        self.linear = spectral_norm(nn.Linear(features, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, features))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        phi = self.features(x)
        return self.linear(phi).squeeze(1) + (self.embed(y) * phi).sum(dim=1)


class ConditionalVAE(nn.Module):
    """Class-conditional VAE: encoder q(z | x, y) = N(mu, diag sigma^2), decoder p(x | z, y) Bernoulli with means
    in [0, 1]; z = mu + sigma * e, e ~ N(0, I) (the reparameterisation)."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, latent_dim: int = 16, width: int = 32):
        super().__init__()
        channels, height, width_px = input_shape
        self.input_shape, self.num_classes, self.latent_dim = tuple(input_shape), num_classes, latent_dim
        k, base_h, base_w = upsampling_plan(height, width_px)
        encoder: list[nn.Module] = [nn.Conv2d(channels + num_classes, width, 3, padding=1), nn.ReLU()]
        c = width
        for _ in range(k):
            encoder += [nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.ReLU()]
            c *= 2
        encoder += [nn.Flatten()]
        self.encoder = nn.Sequential(*encoder)
        features = c * base_h * base_w
        self.to_stats = nn.Linear(features, 2 * latent_dim)
        self.decoder = ConditionalGenerator(input_shape, num_classes, latent_dim=latent_dim, width=c)

    def encode(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        one_hot = nn.functional.one_hot(y, self.num_classes).to(x.dtype)[:, :, None, None]
        h = self.encoder(torch.cat([x, one_hot.expand(-1, -1, *x.shape[2:])], dim=1))
        mu, log_var = self.to_stats(h).chunk(2, dim=1)
        return mu, log_var.clamp(-20.0, 20.0)

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Reconstruction means, mu, log sigma^2."""
        mu, log_var = self.encode(x, y)
        z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
        return self.decoder(z, y), mu, log_var


def count_parameters(module: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in module.parameters())
