"""Generative data augmentation: class-conditional DCGAN and VAE generators, their offline quality measures,
and mixing their samples (optionally made adversarial) into training.

    gen = advfast.gan.load("runs/mnist-gan/generator.pt")
    x, y = gen.sample(100, labels=torch.arange(10).repeat(10))
    mixed = advfast.gan.SyntheticMix(train_set, gen, ratio=0.5)
"""

from advfast.gan.augment import BatchAugmenter, SyntheticMix, check_ratio, synthetic_count
from advfast.gan.grid import save_sample_grid
from advfast.gan.losses import discriminator_loss, generator_loss, mode_seeking_term, vae_loss
from advfast.gan.networks import ConditionalGenerator, ConditionalVAE, ProjectionDiscriminator
from advfast.gan.quality import frechet_distance, generator_quality, penultimate_features
from advfast.gan.sampler import KINDS, GeneratorSampler, check_compatible, load
from advfast.gan.trainer import GeneratorConfig, GeneratorTrainer

__all__ = [
    "KINDS", "BatchAugmenter", "ConditionalGenerator", "ConditionalVAE", "GeneratorConfig", "GeneratorSampler",
    "GeneratorTrainer", "ProjectionDiscriminator", "SyntheticMix", "check_compatible", "check_ratio",
    "discriminator_loss", "frechet_distance", "generator_loss", "generator_quality", "load", "mode_seeking_term",
    "penultimate_features",
    "save_sample_grid", "synthetic_count", "vae_loss",
]  # fmt: skip
