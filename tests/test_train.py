"""The trainer and its objectives on scikit-learn's digits: robustness gained, exact resume, checkpoints,
schedules, bad arguments."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import pytest
import torch
from torch import nn

import advfast
from advfast.runtime import CheckpointError, StopReason, load_checkpoint, save_checkpoint
from advfast.train import AttackSettings, Free, TrainConfig, Trainer, learning_rate_factor
from advfast.train.schedules import ramp
from advfast.train.trainer import TIMING_FIELDS

EPS = 0.1  # on 8x8 digits in [0, 1]: large enough that standard training is fragile
TIMING = TIMING_FIELDS


@pytest.fixture(scope="module")
def digits(digits_data):
    return digits_data


def config(tmp_path: Path, **changes) -> TrainConfig:
    base = dict(
        data="digits", method="pgd", eps=EPS, steps=3, epochs=6, batch_size=64, lr=3e-3, val_size=200,
        val_steps=5, out=str(tmp_path / "run"), progress=False, report=False,
    )  # fmt: skip
    return TrainConfig(**{**base, **changes})


def mlp() -> nn.Module:
    """BatchNorm-free, so that multi-process and accumulated runs are comparable to single-process ones."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def robust_accuracy(model: nn.Module, digits, eps: float = EPS) -> float:
    x, y = digits.test.x, digits.test.y
    model.eval()
    x_adv = advfast.pgd(model, x, y, eps=eps, steps=10, restarts=2, early_stop=True, generator=torch.Generator())
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item()


def without_timing(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in TIMING} for m in metrics]


# ---- each objective buys robustness --------------------------------------------------------------------


@pytest.fixture(scope="module")
def standard_robustness(digits, tmp_path_factory) -> float:
    trainer = Trainer(config(tmp_path_factory.mktemp("standard"), method="standard"), data=digits)
    trainer.fit()
    return robust_accuracy(trainer.model, digits)


@pytest.mark.slow
@pytest.mark.parametrize(
    "changes",
    [
        {"method": "pgd"},
        {"method": "fgsm-rs"},
        {"method": "n-fgsm"},
        {"method": "mixed", "lam": 1.0, "inner": "pgd"},
        {"method": "trades", "beta": 6.0},
        {"method": "free", "replays": 4, "epochs": 2},
        {"method": "grad-align", "align": 0.2},
    ],
    ids=lambda c: c["method"],
)
def test_objective_improves_robust_accuracy_over_standard_training(digits, tmp_path, standard_robustness, changes):
    trainer = Trainer(config(tmp_path, **changes), data=digits)
    metrics = trainer.fit()
    robust = robust_accuracy(trainer.model, digits)
    assert all(math.isfinite(m["train_loss"]) for m in metrics)
    assert robust > standard_robustness + 0.1, (
        f"{changes['method']}: {robust:.3f} vs standard {standard_robustness:.3f}"
    )


def test_free_carries_its_perturbation_and_steps_per_replay(digits, tmp_path) -> None:
    trainer = Trainer(config(tmp_path, method="free", replays=3, epochs=1), data=digits)
    trainer.fit()
    assert trainer.progress.step == 3 * len(trainer.loader)
    delta = trainer.objective.state_dict()["delta"]
    assert delta is not None and delta.abs().max() > 0
    assert delta.abs().max() <= EPS + 1e-6


def test_n_fgsm_steps_from_its_noise_without_projecting(digits, monkeypatch) -> None:
    """x' = clip(x0 + eps sign(g(x0)), 0, 1) from x0 = clip(x + U[-2 eps, 2 eps]): up to 3 eps from x."""
    from advfast.train import NFGSM
    from advfast.train.objectives import n_fgsm

    model, x, y = mlp(), digits.train.x[:64], digits.train.y[:64]
    seen = {}
    original = n_fgsm.pgd

    def recording(attacker, x0, *args, **kwargs):
        seen["x0"] = x0.clone()
        seen["x_adv"] = original(attacker, x0, *args, **kwargs)
        return seen["x_adv"]

    monkeypatch.setattr(n_fgsm, "pgd", recording)
    NFGSM(AttackSettings(eps=EPS), noise=2.0)(model, x, y, generator=torch.Generator().manual_seed(0))
    x0, x_adv = seen["x0"], seen["x_adv"]
    noise = (x0 - x).abs()
    assert noise.max() <= 2 * EPS + 1e-6 and noise.max() > EPS, "noise of up to 2 eps"
    x_in = x0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x_in), y, reduction="sum"), x_in)
    torch.testing.assert_close(x_adv, torch.clamp(x0 + EPS * grad.sign(), 0, 1), atol=1e-6, rtol=0)
    assert (x_adv - x).abs().max() > EPS, "not projected back into the eps-ball"
    with pytest.raises(ValueError, match="n-fgsm is defined for linf only"):
        NFGSM(AttackSettings(eps=EPS, norm="l2"))


def test_a_config_from_before_the_start_option_resumes_with_the_clipped_start(tmp_path) -> None:
    record = config(tmp_path, method="fgsm-rs").to_dict()
    assert record["start"] == "ball", "the default is Wong et al.'s start"
    del record["start"]
    assert TrainConfig.from_dict(record).start == "clipped"


@pytest.mark.parametrize("start", ["clipped", "ball"])
def test_fgsm_rs_takes_its_gradient_at_the_start_it_says(digits, start) -> None:
    """x' = clip(x + clip(x0 + 1.25 eps sign(g(x0)) - x, -eps, eps), 0, 1) with x0 = x + eps U[-1, 1] clipped
    to [0, 1] ("clipped") or not ("ball", Wong et al.'s code): the same noise, the gradient at x0."""
    from advfast.train import FGSMRS

    model, x, y = mlp(), digits.train.x[:64], digits.train.y[:64]
    seen = {}

    def first_input(module, inputs) -> None:  # the first forward is the attack's, at x0
        seen.setdefault("x0", inputs[0].detach().clone())

    model.register_forward_pre_hook(first_input)
    batch = FGSMRS(AttackSettings(eps=EPS), start=start)(model, x, y, generator=torch.Generator().manual_seed(0))
    noise = torch.empty_like(x)
    advfast.ops.random_start_(noise, torch.zeros_like(x), EPS, "linf", -math.inf, math.inf,
                              torch.Generator().manual_seed(0))  # fmt: skip
    x0 = x + noise if start == "ball" else torch.clamp(x + noise, 0, 1)
    torch.testing.assert_close(seen["x0"], x0, atol=1e-6, rtol=0)
    if start == "ball":
        assert bool(((x0 < 0) | (x0 > 1)).any()), "digits have pixels at 0 and 1: some starts are outside"
    x_in = x0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x_in), y, reduction="sum"), x_in)
    expected = torch.clamp(x + torch.clamp(x0 + 1.25 * EPS * grad.sign() - x, -EPS, EPS), 0, 1)
    with torch.no_grad():
        torch.testing.assert_close(batch.logits, model(expected), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="start must be one of"):
        FGSMRS(AttackSettings(eps=EPS), start="box")


def test_grad_align_is_fgsm_plus_the_alignment_term_differentiated_twice(digits) -> None:
    """loss = CE(f(x'), y) + lambda (1 - mean_b cos(g(x)_b, g(x + eta)_b)), x' = clip(x + eps sign(g(x))),
    eta from the seeded uniform start; parameter gradients through g(x + eta) only (g(x) held fixed)."""
    import copy

    from advfast.train import GradAlign

    model, x, y = mlp(), digits.train.x[:64], digits.train.y[:64]
    twin = copy.deepcopy(model)
    batch = GradAlign(AttackSettings(eps=EPS), align=0.5)(model, x, y, generator=torch.Generator().manual_seed(0))
    batch.loss.backward()

    ce = torch.nn.functional.cross_entropy
    x_in = x.clone().requires_grad_(True)
    (g_x,) = torch.autograd.grad(ce(twin(x_in), y, reduction="sum"), x_in)
    x_adv = torch.clamp(x + EPS * g_x.sign(), 0, 1)
    x_eta = torch.empty_like(x)
    advfast.ops.random_start_(x_eta, x, EPS, "linf", 0.0, 1.0, torch.Generator().manual_seed(0))
    x_eta.requires_grad_(True)
    (g_eta,) = torch.autograd.grad(ce(twin(x_eta), y, reduction="sum"), x_eta, create_graph=True)
    cos = torch.nn.functional.cosine_similarity(g_x.flatten(1), g_eta.flatten(1), dim=1)
    expected = ce(twin(x_adv), y) + 0.5 * (1 - cos.mean())
    expected.backward()
    torch.testing.assert_close(batch.loss, expected, atol=1e-6, rtol=1e-6)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5)
    assert (1 - cos.mean()) > 0, "the term is not trivially zero here"
    with pytest.raises(ValueError, match="align must be"):
        GradAlign(AttackSettings(eps=EPS), align=-1.0)
    with pytest.raises(ValueError, match="grad-align is defined for linf only"):
        GradAlign(AttackSettings(eps=EPS, norm="l2"))


def test_objective_in_a_plain_loop(digits) -> None:
    """The objectives are usable without the trainer: one call per batch."""
    model, objective = mlp(), Free(AttackSettings(eps=EPS), replays=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = digits.train.x[:64], digits.train.y[:64]
    for _ in range(objective.replays):
        loss = objective(model, x, y).loss
        optimizer.zero_grad()
        loss.backward()
        objective.after_backward()
        optimizer.step()
    assert objective.state_dict()["delta"].abs().max() > 0


# ---- reproducibility, checkpoints and resume ------------------------------------------------------------


@pytest.mark.slow
def test_same_seed_same_run(digits, tmp_path) -> None:
    a = Trainer(config(tmp_path / "a", epochs=2), data=digits).fit()
    b = Trainer(config(tmp_path / "b", epochs=2), data=digits).fit()
    assert without_timing(a) == without_timing(b)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pgd", "free"])
def test_resumed_run_equals_uninterrupted_run(digits, tmp_path, method) -> None:
    changes = {"method": method, "epochs": 3, "replays": 2, "checkpoint_every": 4}
    full = Trainer(config(tmp_path / "full", **changes), data=digits)
    full_metrics = full.fit()

    # Stops at the first batch boundary at or after max_steps: mid-epoch for both (free steps twice a batch).
    first = Trainer(config(tmp_path / "cut", max_steps=10, **changes), data=digits)
    first.fit()
    assert first.progress.stop.reason is StopReason.MAX_STEPS and first.progress.step == 10
    resumed = Trainer(config(tmp_path / "cut", **changes), data=digits)
    resumed.load(tmp_path / "cut" / "run" / "last.pt")
    resumed_metrics = resumed.fit()

    assert without_timing(resumed_metrics) == without_timing(full_metrics)
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    lines = (tmp_path / "cut" / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3


def test_a_run_resumed_at_its_step_limit_takes_no_step(digits, tmp_path) -> None:
    first = Trainer(config(tmp_path, max_steps=3), data=digits)
    first.fit()
    assert first.progress.step == 3
    again = Trainer.resume(tmp_path / "run")  # the config keeps max_steps 3
    again.fit()
    assert again.progress.step == 3 and again.progress.stop.reason is StopReason.MAX_STEPS
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key
    onward = Trainer.resume(tmp_path / "run", max_steps=5)
    onward.fit()
    assert onward.progress.step == 5


def test_sigterm_saves_and_stops_at_a_step_boundary(digits, tmp_path) -> None:
    class SignalAtStepFive(Trainer):
        def train_batch(self, batch, seed):
            stepped = super().train_batch(batch, seed)
            if self.progress.step == 5:
                os.kill(os.getpid(), signal.SIGTERM)
            return stepped

    trainer = SignalAtStepFive(config(tmp_path, epochs=2), data=digits)
    trainer.fit()
    assert trainer.progress.stop.reason is StopReason.SIGNAL
    assert str(trainer.progress.stop) == f"signal {int(signal.SIGTERM)}"
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    assert saved["progress"]["step"] == 5
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the handler must be restored"


def test_checkpoint_is_written_atomically_and_loaded_weights_only(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.ones(2)}, "note": "x"}, role="classifier")
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"], "no temporary file may be left behind"
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: p.write_bytes(b"not a checkpoint at all"), "not a readable advfast checkpoint"),
        (lambda p: torch.save({"weights": torch.ones(1)}, p), "not an advfast checkpoint"),
        (lambda p: p.write_bytes(b""), "not a readable advfast checkpoint"),
    ],
    ids=["garbage", "foreign", "empty"],
)
def test_bad_checkpoints_give_clear_errors(tmp_path, write, message) -> None:
    path = tmp_path / "bad.pt"
    write(path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_truncated_checkpoint_gives_a_clear_error(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.randn(1000)}}, role="classifier")
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such run folder or checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_of_another_model_is_refused(digits, tmp_path) -> None:
    trainer = Trainer(config(tmp_path, epochs=1, max_steps=1), data=digits)
    trainer.fit()
    other = Trainer(config(tmp_path / "other", epochs=1), model=mlp(), data=digits)
    with pytest.raises(CheckpointError, match="written for a different model"):
        other.load(tmp_path / "run" / "last.pt")


# ---- training options ------------------------------------------------------------------------------------


def test_gradient_accumulation_matches_the_large_batch(digits, tmp_path) -> None:
    """Two accumulated batches of 32 are one batch of 64: same data, same averaged gradient."""
    changes = {"method": "standard", "epochs": 1, "optimizer": "sgd", "lr": 0.1, "schedule": "constant"}
    big = Trainer(config(tmp_path / "big", batch_size=64, **changes), model=mlp(), data=digits)
    big.fit()
    small = Trainer(config(tmp_path / "small", batch_size=32, accumulate=2, **changes), model=mlp(), data=digits)
    small.fit()
    assert small.progress.step == big.progress.step
    for key, value in big.model.state_dict().items():
        torch.testing.assert_close(small.model.state_dict()[key], value, atol=1e-5, rtol=1e-5)


def test_bf16_autocast_trains(digits, tmp_path) -> None:
    metrics = Trainer(config(tmp_path, epochs=1, amp="bf16"), data=digits).fit()
    assert math.isfinite(metrics[-1]["train_loss"])


def test_eps_warmup_ramps_linearly() -> None:
    assert ramp(0, 100, 0.0) == 1.0
    assert ramp(0, 100, 0.3) == pytest.approx(1 / 30)
    assert ramp(14, 100, 0.3) == pytest.approx(0.5)
    assert ramp(50, 100, 0.3) == 1.0


@pytest.mark.parametrize(
    ("name", "points"),
    [
        ("cosine", [(0, 1.0), (50, 0.5), (100, 0.0)]),
        ("one-cycle", [(0, 0.0), (40, 1.0), (70, 0.5), (100, 0.0)]),
        ("piecewise", [(0, 1.0), (49, 1.0), (50, 0.1), (75, 0.01)]),
        ("adaptive", [(0, 1.0), (3, 0.5), (99, 0.1)]),
        ("constant", [(0, 1.0), (100, 1.0)]),
    ],
)
def test_schedules(name: str, points) -> None:
    for step, factor in points:
        assert learning_rate_factor(name, step, 100) == pytest.approx(factor), (name, step)


# ---- bad arguments ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "madry"}, "method must be one of"),
        ({"eps": -0.1}, r"eps must be in \[0, inf\], got -0.1"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"schedule": "step"}, "schedule must be one of"),
        ({"subset": 0.0}, "subset must be in"),
        ({"amp": "fp8"}, "amp must be one of"),
        ({"method": "fgsm-rs", "start": "box"}, "start must be one of"),
        ({"method": "free", "accumulate": 2}, "accumulate > 1 is not supported"),
    ],
)
def test_bad_config_is_refused(tmp_path, changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        config(tmp_path, **changes)


def test_label_count_must_match_the_model(digits, tmp_path) -> None:
    five_outputs = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    with pytest.raises(ValueError, match="the data has 10 classes"):
        Trainer(config(tmp_path), model=five_outputs, data=digits)


def test_empty_or_tiny_data_is_refused(digits, tmp_path) -> None:
    from advfast.data import DataSplits

    tiny = DataSplits("tiny", digits.train.subset(torch.arange(10)), digits.val, digits.test, digits.classes)
    with pytest.raises(ValueError, match="fewer than one batch"):
        Trainer(config(tmp_path), data=tiny)
