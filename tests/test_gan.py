"""Generators (cGAN, VAE): losses against their formulas, shapes, training lowers the Frechet distance,
sampling, save/load/resume, quality measures, and augmentation (mixing, adversarial, errors)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import advfast
from advfast.gan import (
    BatchAugmenter,
    ConditionalGenerator,
    ConditionalVAE,
    GeneratorConfig,
    GeneratorTrainer,
    ProjectionDiscriminator,
    SyntheticMix,
    discriminator_loss,
    frechet_distance,
    generator_loss,
    generator_quality,
    load,
    mode_seeking_term,
    save_sample_grid,
    synthetic_count,
    vae_loss,
)
from advfast.runtime import CheckpointError, StopReason, save_checkpoint
from advfast.train import TrainConfig, Trainer


@pytest.fixture(scope="module")
def digits(digits_data):
    return digits_data


def generator_config(tmp_path: Path, **changes) -> GeneratorConfig:
    base = dict(data="digits", model="cgan", epochs=2, batch_size=64, out=str(tmp_path / "gen"), progress=False,
                sample_every=0)  # fmt: skip
    return GeneratorConfig(**{**base, **changes})


def train_generators(digits, folder: Path, epochs: int) -> dict[str, GeneratorTrainer]:
    runs = {}
    for kind in ("cgan", "vae"):
        trainer = GeneratorTrainer(generator_config(folder / kind, model=kind, epochs=epochs), data=digits)
        trainer.fit()
        runs[kind] = trainer
    return runs


@pytest.fixture(scope="module")
def quick(digits, tmp_path_factory):
    """A cGAN and a VAE after one epoch: saved, loadable generators of digits for the tests that need one of
    the right shape and class count, not a good one."""
    return train_generators(digits, tmp_path_factory.mktemp("quick"), epochs=1)


@pytest.fixture(scope="module")
def trained(digits, digits_model, tmp_path_factory):
    """A cGAN and a VAE trained for 12 epochs on digits, and the session's classifier of the real digits as the
    judge of the quality measures."""
    return train_generators(digits, tmp_path_factory.mktemp("trained"), epochs=12), digits_model[0]


# ---- losses -------------------------------------------------------------------------------------------------


def test_gan_losses_match_their_formulas() -> None:
    real, fake = torch.randn(64), torch.randn(64)
    d = torch.sigmoid
    assert generator_loss(fake) == pytest.approx(-torch.log(d(fake)).mean().item(), rel=1e-5)
    expected = -(torch.log(d(real)) + torch.log(1 - d(fake))).mean()
    assert discriminator_loss(real, fake) == pytest.approx(expected.item(), rel=1e-5)
    smoothed = -(0.9 * torch.log(d(real)) + 0.1 * torch.log(1 - d(real)) + torch.log(1 - d(fake))).mean()
    assert discriminator_loss(real, fake, real_target=0.9) == pytest.approx(smoothed.item(), rel=1e-5)


def test_mode_seeking_term_matches_its_formula() -> None:
    fake_a, fake_b = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
    z_a, z_b = torch.randn(4, 16), torch.randn(4, 16)
    ratio = (fake_a - fake_b).abs().mean() / (z_a - z_b).abs().mean()
    assert mode_seeking_term(fake_a, fake_b, z_a, z_b).item() == pytest.approx(1 / (ratio.item() + 1e-5), rel=1e-5)
    assert mode_seeking_term(fake_a, fake_a, z_a, z_b).item() == pytest.approx(1e5, rel=1e-5), "no diversity"


def test_vae_loss_matches_its_formula() -> None:
    x = torch.rand(8, 1, 8, 8)
    reconstruction = torch.rand(8, 1, 8, 8).clamp(0.01, 0.99)
    mu, log_var = torch.randn(8, 4), torch.randn(8, 4)
    total, recon, kl = vae_loss(reconstruction, x, mu, log_var)
    expected_recon = -(x * reconstruction.log() + (1 - x) * (1 - reconstruction).log()).sum() / 8
    posterior = torch.distributions.Normal(mu, torch.exp(0.5 * log_var))
    prior = torch.distributions.Normal(torch.zeros(4), torch.ones(4))
    expected_kl = torch.distributions.kl_divergence(posterior, prior).sum() / 8
    assert recon.item() == pytest.approx(expected_recon.item(), rel=1e-5)
    assert kl.item() == pytest.approx(expected_kl.item(), rel=1e-5)
    assert total.item() == pytest.approx(recon.item() + kl.item(), rel=1e-6)


# ---- networks -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 30, 30)])
def test_networks_fit_any_input_shape(shape) -> None:
    generator, critic, vae = ConditionalGenerator(shape, 7), ProjectionDiscriminator(shape, 7), ConditionalVAE(shape, 7)
    y = torch.arange(5) % 7
    x = generator(torch.randn(5, generator.latent_dim), y)
    assert x.shape == (5, *shape) and x.min() >= 0 and x.max() <= 1
    assert critic(x, y).shape == (5,)
    reconstruction, mu, log_var = vae(x.detach(), y)
    assert reconstruction.shape == x.shape and mu.shape == log_var.shape == (5, vae.latent_dim)


# ---- training and quality -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cgan", "vae"])
def test_training_lowers_the_frechet_distance(digits, trained, kind) -> None:
    runs, classifier = trained
    trainer = runs[kind]
    untrained = GeneratorTrainer(generator_config(Path(trainer.out).parent / "untrained", model=kind), data=digits)
    before = generator_quality(untrained.sampler, classifier, digits.test.x, digits.test.y, samples=500)
    after = generator_quality(trainer.sampler, classifier, digits.test.x, digits.test.y, samples=500)
    assert after["frechet_distance"] < 0.5 * before["frechet_distance"], (before, after)
    assert after["label_accuracy"] > before["label_accuracy"] + 0.2
    assert after["frechet_distance_real_halves"] < after["frechet_distance"]
    assert len(after["label_accuracy_per_class"]) == 10
    assert all(math.isfinite(m[k]) for m in trainer.progress.metrics for k in m)


def test_frechet_distance_of_gaussians() -> None:
    """For Gaussians the distance has a closed form: ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(20000, 3, generator=gen, dtype=torch.float64) * 2 + torch.tensor([1.0, 0.0, 0.0])
    # S_a = I, S_b = 4I: Tr(I + 4I - 2*2I) = 3; mean difference 1.
    assert frechet_distance(a, b) == pytest.approx(4.0, abs=0.1)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_sampler_returns_the_requested_labels_and_count(quick) -> None:
    sampler = quick["cgan"].sampler
    x, y = sampler.sample(25)
    assert x.shape == (25, 1, 8, 8) and y.tolist() == [i % 10 for i in range(25)]
    labels = torch.tensor([3, 3, 7, 0])
    assert torch.equal(sampler.sample(4, labels)[1], labels)
    assert sampler.sample(6, 9)[1].tolist() == [9] * 6
    assert sampler.sample(0)[0].shape == (0, 1, 8, 8)
    with pytest.raises(ValueError, match="labels must be in"):
        sampler.sample(2, torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="labels must have shape"):
        sampler.sample(3, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="n must be an integer"):
        sampler.sample(-1)


def test_saved_generator_loads_and_samples_the_same(quick, tmp_path) -> None:
    for kind, trainer in quick.items():
        loaded = load(Path(trainer.out) / "generator.pt")
        assert loaded.kind == kind and loaded.input_shape == (1, 8, 8) and loaded.num_classes == 10
        first = trainer.sampler.sample(12, generator=torch.Generator().manual_seed(4))[0]
        second = loaded.sample(12, generator=torch.Generator().manual_seed(4))[0]
        assert torch.equal(first, second)
        assert (Path(trainer.out) / "samples.png").stat().st_size > 0
    path = save_sample_grid(loaded, tmp_path / "grid.png", per_class=3)
    assert path.stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cgan", "vae"])
def test_resumed_generator_run_equals_uninterrupted(digits, tmp_path, kind) -> None:
    full = GeneratorTrainer(generator_config(tmp_path / "full", model=kind), data=digits)
    full.fit()
    cut = GeneratorTrainer(generator_config(tmp_path / "cut", model=kind, max_steps=7), data=digits)
    cut.fit()
    assert cut.progress.stop.reason is StopReason.MAX_STEPS and cut.progress.step == 7
    resumed = GeneratorTrainer(generator_config(tmp_path / "cut", model=kind), data=digits)
    resumed.load(tmp_path / "cut" / "gen" / "generator.pt")
    resumed.fit()
    strip = [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in full.progress.metrics]
    assert [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in resumed.progress.metrics] == strip
    for key, value in full.network.state_dict().items():
        assert torch.equal(value, resumed.network.state_dict()[key]), key


# ---- augmentation ---------------------------------------------------------------------------------------


def test_adversarial_augmentation_stays_within_eps_of_the_generated_sample(quick) -> None:
    sampler = quick["cgan"].sampler
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    augmenter = BatchAugmenter(sampler, 0.5, adversarial=True, eps=0.1, steps=5)
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    mixed_x, mixed_y = augmenter(model, x, y, torch.Generator().manual_seed(3))
    assert mixed_x.shape == (32, 1, 8, 8) and torch.equal(mixed_x[:16], x) and torch.equal(mixed_y[:16], y)
    # The same generator state gives the generated samples before the attack.
    generator = torch.Generator().manual_seed(3)
    offset = int(torch.randint(10, (1,), generator=generator))
    labels = (torch.arange(16) + offset) % 10
    generated, _ = sampler.sample(16, labels, generator=generator)
    assert torch.equal(mixed_y[16:], labels)
    moved = (mixed_x[16:] - generated).abs().amax()
    assert 0 < moved <= 0.1 + 1e-6, moved


def test_synthetic_mix_dataset(quick, digits) -> None:
    sampler = quick["vae"].sampler
    mix = SyntheticMix(digits.train, sampler, 0.25, seed=1)
    assert len(mix) == len(digits.train) + synthetic_count(len(digits.train), 0.25)
    assert synthetic_count(len(digits.train), 0.25) == round(len(digits.train) / 3)
    real_x, real_y = mix[0]
    assert torch.equal(real_x, digits.train.x[0]) and real_y == digits.train.y[0]
    indices = [len(digits.train) + i for i in range(20)]
    x, y = mix.__getitems__(indices)
    assert x.shape == (20, 1, 8, 8) and y.tolist() == [i % 10 for i in range(20)]
    assert torch.equal(x, mix.__getitems__(indices)[0]), "the same indices give the same samples"
    loader = torch.utils.data.DataLoader(mix, batch_size=64, shuffle=True, collate_fn=lambda batch: batch)
    xb, yb = next(iter(loader))
    assert xb.shape == (64, 1, 8, 8) and yb.shape == (64,)


def test_training_with_augmentation(quick, digits, tmp_path) -> None:
    path = Path(quick["cgan"].out) / "generator.pt"
    config = TrainConfig(
        data="digits", method="pgd", eps=0.1, steps=3, epochs=1, batch_size=64, val_size=100, val_steps=3,
        augment=str(path), synthetic_ratio=0.5, synthetic_adversarial=True, out=str(tmp_path / "aug"),
        progress=False, report=False,
    )  # fmt: skip
    trainer = Trainer(config, data=digits)
    metrics = trainer.fit()
    assert trainer.augmenter is not None
    assert metrics[0]["train_acc"] > 0
    assert math.isfinite(metrics[0]["train_loss"])


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_bad_ratio_is_refused(quick, digits, ratio) -> None:
    with pytest.raises(ValueError, match="ratio must be in"):
        SyntheticMix(digits.train, quick["cgan"].sampler, ratio)
    with pytest.raises(ValueError, match="synthetic_ratio must be in"):
        TrainConfig(data="digits", augment="x.pt", synthetic_ratio=ratio)


def test_generator_for_other_data_is_refused(digits, tmp_path) -> None:
    """A generator of 28x28 images (or of another class count) cannot feed 8x8 digits."""
    network = ConditionalGenerator((1, 28, 28), 10)
    path = save_checkpoint(
        tmp_path / "mnist-like.pt",
        {
            "kind": "cgan",
            "input_shape": [1, 28, 28],
            "num_classes": 10,
            "network": network.state_dict(),
        },
        role="generator",
    )
    config = TrainConfig(data="digits", augment=str(path), epochs=1, batch_size=64, out=str(tmp_path / "r"),
                         progress=False, report=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"makes 10-class images of shape \(1, 28, 28\)"):
        Trainer(config, data=digits)


def test_corrupt_or_foreign_generator_files_are_refused(digits, tmp_path) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a readable advfast checkpoint"):
        load(corrupt)
    classifier = save_checkpoint(tmp_path / "classifier.pt", {"model": {}}, role="classifier")
    with pytest.raises(CheckpointError, match=r"is a classifier checkpoint \(advfast train\), not a generator"):
        load(classifier)
    wrong = save_checkpoint(
        tmp_path / "wrong.pt",
        {
            "kind": "cgan",
            "input_shape": [1, 8, 8],
            "num_classes": 3,
            "network": ConditionalGenerator((1, 8, 8), 10).state_dict(),
        },
        role="generator",
    )
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load(wrong)


def test_bad_generator_config_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="model must be one of"):
        GeneratorConfig(model="stylegan")
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        GeneratorConfig(label_smoothing=0.7)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        GeneratorConfig(epochs=0)
    with pytest.raises(ValueError, match=r"diversity must be in \[0, inf\]"):
        GeneratorConfig(diversity=-1.0)
    with pytest.raises(ValueError, match="batch_size must be at least 2 for the cgan"):
        GeneratorTrainer(generator_config(tmp_path, batch_size=1))


def test_advfast_gives_its_layers_on_first_use() -> None:
    assert advfast.gan.load is load


def test_a_generator_near_chance_is_called_out_with_what_to_change() -> None:
    from advfast.pipelines.augment import quality_warnings

    assert quality_warnings({"label_accuracy": 0.9, "epochs": 10}, 10) == []
    (warning,) = quality_warnings({"label_accuracy": 0.099, "epochs": 2}, 10)
    assert "9.9%" in warning and "near chance (10.0%)" in warning
    assert "--epochs" in warning and "--resume" in warning and "samples.png" in warning
