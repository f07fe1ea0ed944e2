"""The text trainer on a tiny random BERT and an easy CSV: it learns, resumes exactly, saves what rebuilds the
model, refuses bad configs naming the argument, and runs every method's passes through a DDP-like wrapper with
only the last one synchronised."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch
from text_support import one_thread, save_tiny_classifier, tiny_bert, token_batch, write_easy_csv  # noqa: F401

from advfast.runtime import CheckpointError, StopReason, load_checkpoint
from advfast.text import make_adversary
from advfast.text.training import (
    METHODS,
    LinearWarmupDecay,
    Standard,
    TextTrainConfig,
    TextTrainer,
    load_text_run,
)
from advfast.text.training.trainer import TIMING_FIELDS


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("text-train")
    return {
        "model": save_tiny_classifier(root / "model"),
        "dropout_model": save_tiny_classifier(root / "dropout-model", dropout=0.1),
        "data": write_easy_csv(root / "easy.csv", n=120),
    }


def config(files, out: Path, **changes) -> TextTrainConfig:
    base = dict(
        data=str(files["data"]), model=str(files["model"]), method="standard", epochs=8, batch_size=8, lr=3e-3,
        out=str(out), progress=False, report=False, device="cpu",
    )  # fmt: skip
    return TextTrainConfig(**{**base, **changes})


def without_timing(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in TIMING_FIELDS} for m in metrics]


# ---- learning ------------------------------------------------------------------------------------------------


# The tiny model's word embeddings have norm ~0.1 per token (MiniLM's ~1): radii scaled to match.
TINY_FREELB = {"method": "freelb", "eps": 0.05, "alpha": 0.02, "init_mag": 0.05}


@pytest.mark.parametrize("changes", [{"method": "standard"}, TINY_FREELB], ids=["standard", "freelb"])
def test_the_trainer_learns_an_easy_task(files, tmp_path, changes):
    trainer = TextTrainer(config(files, tmp_path / "run", **changes))
    metrics = trainer.fit()
    assert len(metrics) == 8
    assert metrics[0]["val_clean_acc"] <= 0.7, "the task must not be solved before training"
    assert metrics[-1]["val_clean_acc"] >= 0.9
    assert metrics[-1]["train_loss"] < 0.5 * metrics[0]["train_loss"]
    assert not trainer.warnings
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, 9))


@pytest.mark.parametrize("method", [m for m in METHODS if m not in ("standard", "freelb")])
def test_every_method_trains_and_records_the_options_it_used(files, tmp_path, method):
    trainer = TextTrainer(config(files, tmp_path / "run", method=method, epochs=1))
    trainer.fit()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["method"] == method
    assert saved["eps"] == trainer.adversary.eps  # the adversary's default, resolved and saved
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


@pytest.mark.parametrize(("method", "default"), [("pgd", False), ("fgm", True)])
def test_include_clean_reaches_the_adversary_and_the_resolved_config(files, tmp_path, method, default):
    assert TextTrainer(config(files, tmp_path / "auto", method=method, epochs=1)).config.include_clean is default
    trainer = TextTrainer(config(files, tmp_path / "set", method=method, epochs=1, include_clean=not default))
    assert trainer.adversary.include_clean is (not default)
    assert trainer.config.include_clean is (not default)


def test_the_split_seed_fixes_the_test_set_across_run_seeds(files, tmp_path):
    from advfast.text.training.trainer import load_text_data

    def test_texts(**changes):
        return list(load_text_data(config(files, tmp_path, **changes)).test.texts)

    assert test_texts(seed=1) != test_texts(seed=0), "without a split seed, the run's seed draws the split"
    assert test_texts(seed=1, split_seed=0) == test_texts(seed=0) == test_texts(seed=2, split_seed=0)


def test_a_run_that_learns_nothing_says_so(files, tmp_path, capsys):
    trainer = TextTrainer(config(files, tmp_path / "run", epochs=1, lr=1e-9))
    trainer.fit()
    out = capsys.readouterr().out
    assert "warning: the training loss ended at" in out and "lower --lr or --eps" in out
    assert trainer.warnings


def test_the_schedule_warms_up_then_decays_linearly():
    factor = LinearWarmupDecay(warmup_steps=4, total_steps=20)
    assert [factor(t) for t in (0, 2, 4, 12, 20, 25)] == [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    assert LinearWarmupDecay(0, 10)(0) == 1.0


# ---- checkpoints and resume ------------------------------------------------------------------------------------


def test_a_stopped_and_resumed_run_equals_an_uninterrupted_one(files, tmp_path):
    changes = dict(model=str(files["dropout_model"]), **TINY_FREELB, epochs=2, batch_size=8)
    whole = TextTrainer(config(files, tmp_path / "whole", **changes))
    whole.fit()
    steps_per_epoch = len(whole.loader)
    stopped = TextTrainer(config(files, tmp_path / "parts", max_steps=steps_per_epoch + 3, **changes))
    stopped.fit()
    assert stopped.progress.stop is not None and stopped.progress.stop.reason is StopReason.MAX_STEPS
    assert stopped.progress.batch == 3, "stopped mid-epoch"
    resumed = TextTrainer.resume(tmp_path / "parts", max_steps=0)
    assert resumed.progress.step == steps_per_epoch + 3
    resumed.fit()
    assert without_timing(resumed.progress.metrics) == without_timing(whole.progress.metrics)
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert resumed.scheduler.state_dict()["last_epoch"] == whole.scheduler.state_dict()["last_epoch"]


def test_the_checkpoint_rebuilds_the_model(files, tmp_path):
    trainer = TextTrainer(config(files, tmp_path / "run", epochs=1))
    trainer.fit()
    record = load_checkpoint(tmp_path / "run" / "last.pt", role="text-classifier")
    assert record["num_labels"] == 2 and record["classes"] == ["0", "1"]
    assert record["model_path"] == str(files["model"].resolve())
    for key in ("optimizer", "scheduler", "config", "progress", "per_rank"):
        assert key in record, key
    trained = load_text_run(tmp_path / "run")
    assert not trained.model.training
    batch = token_batch(num_labels=2)
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        actual = trained.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(actual, expected)


def test_an_image_checkpoint_is_not_a_text_run(files, tmp_path):
    from advfast.runtime import save_checkpoint

    save_checkpoint(tmp_path / "last.pt", {"config": {}}, role="classifier")
    with pytest.raises(CheckpointError, match=r"is a classifier checkpoint .*not a text-classifier checkpoint"):
        load_text_run(tmp_path)
    with pytest.raises(CheckpointError, match="not a text-classifier checkpoint"):
        TextTrainer.resume(tmp_path)


# ---- configs -------------------------------------------------------------------------------------------------


def test_config_round_trips_and_refuses_foreign_fields(files, tmp_path):
    c = config(files, tmp_path, method="pgd", eps=0.5, steps=2)
    assert TextTrainConfig.from_dict(json.loads(c.to_json())) == c
    with pytest.raises(ValueError, match=r"not a text training configuration: unknown fields \['eps_warmup'\]"):
        TextTrainConfig.from_dict({**c.to_dict(), "eps_warmup": 0.3})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "trades"}, "method must be one of"),
        ({"method": "fgm", "steps": 3}, "steps does not apply to method fgm"),
        ({"method": "standard", "eps": 1.0}, "eps does not apply to method standard"),
        ({"method": "freelb", "include_clean": True}, "include_clean does not apply to method freelb"),
        ({"method": "pgd", "include_clean": "yes"}, "include_clean must be true or false"),
        ({"split_seed": -1}, "split_seed must be an integer >= 0"),
        ({"eps": -1.0, "method": "pgd"}, "eps must be in"),
        ({"alpha": 0.0, "method": "pgd"}, "alpha must be in"),
        ({"steps": 0, "method": "freelb"}, "steps must be an integer >= 1"),
        ({"norm": "l1", "method": "pgd"}, "norm must be one of"),
        ({"max_length": 1}, "max_length must be an integer >= 2"),
        ({"warmup": 1.5}, "warmup must be in"),
        ({"lr": 0.0}, "lr must be in"),
        ({"eval_eps": []}, "eval_eps must list at least one radius"),
        ({"eval_budgets": [0]}, "eval_budgets must be an integer >= 1"),
        ({"model": ""}, "model must be a non-empty string"),
    ],
)
def test_bad_configs_name_the_argument(files, tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        config(files, tmp_path, **changes)


def test_bad_data_and_models_are_clear(files, tmp_path):
    with pytest.raises(ValueError, match="fewer than one batch of 512"):
        TextTrainer(config(files, tmp_path / "a", batch_size=512))
    with pytest.raises(ValueError, match="name_or_path must be one of"):
        TextTrainer(config(files, tmp_path / "b", model=str(tmp_path / "no-model")))
    with pytest.raises(ValueError, match="data must be one of"):
        TextTrainer(config(files, tmp_path / "c", data="no-such-set"))


# ---- DDP: only the last pass synchronises ------------------------------------------------------------------------


class CountingWrapper(torch.nn.Module):
    """Stands in for DistributedDataParallel: forwards to the model, counts synchronised and local forwards."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module
        self.local = False
        self.forwards: list[bool] = []  # True: a synchronised forward

    @contextlib.contextmanager
    def no_sync(self):
        self.local = True
        try:
            yield
        finally:
            self.local = False

    def forward(self, **kwargs):
        self.forwards.append(not self.local)
        return self.module(**kwargs)


@pytest.mark.parametrize(("method", "options"), [
    ("standard", {}), ("fgm", {}), ("pgd", {"steps": 2}), ("freelb", {"steps": 3}), ("smart", {"steps": 2}),
    ("r3f", {}),
])  # fmt: skip
def test_only_the_last_forward_of_each_method_synchronises(method, options):
    model = tiny_bert(num_labels=3)
    plain = tiny_bert(num_labels=3)
    wrapper = CountingWrapper(model)

    def build(m, w=None):
        kw = {"wrapper": w, "generator": torch.Generator().manual_seed(0)}
        return Standard(m, **kw) if method == "standard" else make_adversary(method, m, **options, **kw)

    batch = token_batch()
    build(model, wrapper).loss(batch)
    build(plain).loss(batch)
    assert wrapper.forwards[-1] is True and sum(wrapper.forwards) == 1, wrapper.forwards
    if method == "freelb":
        assert wrapper.forwards == [False, False, True]
    for (name, p), q in zip(model.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_a_wrapper_of_another_model_is_refused():
    with pytest.raises(ValueError, match="wrapper must be a DistributedDataParallel around model"):
        make_adversary("freelb", tiny_bert(), wrapper=CountingWrapper(tiny_bert()))
