"""The trainer under torchrun: 2 CPU processes (gloo) match one process on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from torch import nn
    from advfast.data import digits_splits
    from advfast.train import TrainConfig, Trainer

    torch.manual_seed(0)
    # No BatchNorm: its batch statistics are per process, so they would differ from one process's.
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    config = TrainConfig(
        data="digits", method="mixed", inner="fgsm", eps=0.1, epochs=2, batch_size=64, lr=3e-3, val_size=200,
        val_steps=5, out=sys.argv[1], progress=False, report=False, device="cpu",
    )
    trainer = Trainer(config, model=model, data=digits_splits(seed=0))
    metrics = trainer.fit()
    if trainer.ctx.is_main:
        with open(sys.argv[1] + "/result.json", "w") as f:
            json.dump({"world_size": trainer.ctx.world_size, "metrics": metrics}, f)
        torch.save(trainer.model.state_dict(), sys.argv[1] + "/weights.pt")
    """
)


def run(tmp_path: Path, name: str, launcher: list[str]) -> tuple[dict, dict]:
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    out = tmp_path / name
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*launcher, str(script), str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "result.json").read_text()), torch.load(out / "weights.pt", weights_only=True)


@pytest.mark.slow
def test_two_processes_match_one_on_the_same_global_batch(tmp_path: Path) -> None:
    single, single_weights = run(tmp_path, "single", [sys.executable])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    double, double_weights = run(tmp_path, "double", torchrun)
    assert single["world_size"] == 1 and double["world_size"] == 2
    assert len(single["metrics"]) == len(double["metrics"]) == 2
    for one, two in zip(single["metrics"], double["metrics"], strict=True):
        assert one["step"] == two["step"]
        # Gradients are averaged across processes in another order: equal up to float rounding. (The
        # validation attack's random starts are drawn per process, so its accuracy is not compared.)
        for key in ("train_loss", "train_acc", "val_clean_acc", "lr", "eps"):
            assert two[key] == pytest.approx(one[key], abs=1e-4), key
    for key, value in single_weights.items():
        torch.testing.assert_close(double_weights[key], value, atol=1e-4, rtol=1e-4)
    assert not (tmp_path / "double" / "last.pt.tmp").exists()
    assert sorted(p.name for p in (tmp_path / "double").iterdir()) == [
        "config.json", "last.pt", "metrics.jsonl", "result.json", "weights.pt",
    ]  # fmt: skip
