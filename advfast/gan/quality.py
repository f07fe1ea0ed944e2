"""Offline quality of a generator, in the eyes of a classifier trained on the real data (no downloaded
Inception weights): the Frechet distance of feature statistics, and how often the classifier assigns a sample
to the label it was generated for."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import linalg
from torch import Tensor, nn

from advfast.eval import predict
from advfast.gan.sampler import GeneratorSampler


def penultimate_features(model: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """The input of the model's last ``nn.Linear`` (its feature vector), for every sample of ``x``."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError("the feature model needs a final nn.Linear layer")
    captured: list[Tensor] = []
    hook = last[-1].register_forward_pre_hook(lambda module, args: captured.append(args[0].detach().flatten(1)))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                model(x[start : start + batch_size].to(device))
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(captured).double().cpu()


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` between Gaussians fitted to two feature sets
    (Heusel et al., 2017, with the classifier's features in place of Inception's).

    The trace of the matrix root is taken as ``sum sqrt(eig(S_a^(1/2) S_b S_a^(1/2)))``: that matrix has the
    eigenvalues of S_a S_b but is symmetric positive semi-definite, so symmetric eigensolvers give it stably even
    when the covariances are singular (dead ReLU features, fewer samples than dimensions)."""
    if len(features_a) < 2 or len(features_b) < 2:
        raise ValueError("the Frechet distance needs at least 2 samples on each side")
    a, b = features_a.double().numpy(), features_b.double().numpy()
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    values, vectors = linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(np.clip(middle, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def generator_quality(
    sampler: GeneratorSampler,
    classifier: nn.Module,
    real_x: Tensor,
    real_y: Tensor,
    *,
    samples: int = 10000,
    seed: int = 0,
) -> dict[str, Any]:
    """The classifier's accuracy on the labels of ``samples`` generated images (classes in turn), overall and
    per class, and two Frechet distances at the same sample size n = len(real_x) // 2: generated images against
    a random half of the real images, and the other real half against that same half (the floor a perfect
    generator would reach: the estimate is biased upwards by about Tr(S)/n, so only like-sized distances
    compare)."""
    generator = torch.Generator(device=sampler.device).manual_seed(seed)
    fake_x, fake_y = [], []
    for start in range(0, samples, 1000):
        x, y = sampler.sample(min(1000, samples - start), generator=generator)
        fake_x.append(x.cpu())
        fake_y.append(y.cpu())
    fake_x, fake_y = torch.cat(fake_x), torch.cat(fake_y)
    real_features = penultimate_features(classifier, real_x)
    fake_features = penultimate_features(classifier, fake_x)
    order = torch.randperm(len(real_x), generator=torch.Generator().manual_seed(seed))
    half = len(real_x) // 2
    reference, held_out = real_features[order[:half]], real_features[order[half : 2 * half]]
    n = min(half, len(fake_features))
    hit = predict(classifier, fake_x) == fake_y
    return {
        "samples": samples,
        "frechet_samples": n,
        "frechet_distance": frechet_distance(reference[:n], fake_features[:n]),
        "frechet_distance_real_halves": frechet_distance(reference[:n], held_out[:n]),
        "label_accuracy": hit.float().mean().item(),
        "label_accuracy_per_class": [hit[fake_y == c].float().mean().item() for c in range(sampler.num_classes)],
    }
