"""The text trainer under torchrun: 2 CPU processes (gloo) match one process on the same global batch, and
FreeLB's K backward passes all-reduce once per step (all but the last under no_sync)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from text_support import save_tiny_classifier, write_easy_csv

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from advfast.text.training import TextTrainConfig, TextTrainer

    torch.set_num_threads(1)
    out, model, data = sys.argv[1:4]
    # init_mag 0: FreeLB starts from the clean point, so no random draw differs between 1 and 2 processes
    # (the tiny model has no dropout for the same reason).
    config = TextTrainConfig(
        data=data, model=model, method="freelb", eps=0.05, alpha=0.02, steps=3, init_mag=0.0, epochs=2,
        batch_size=8, lr=3e-3, out=out, progress=False, report=False, device="cpu",
    )
    trainer = TextTrainer(config)
    reductions = []
    if trainer.ctx.distributed:
        def counting_hook(state, bucket):
            reductions.append(1)
            return allreduce_hook(state, bucket)
        trainer.train_model.register_comm_hook(None, counting_hook)
    metrics = trainer.fit()
    if trainer.ctx.is_main:
        with open(out + "/result.json", "w") as f:
            json.dump({"world_size": trainer.ctx.world_size, "metrics": metrics, "reductions": len(reductions),
                       "steps": trainer.progress.step}, f)
        torch.save(trainer.model.state_dict(), out + "/weights.pt")
    """
)


def run(tmp_path: Path, name: str, launcher: list[str], model: Path, data: Path) -> tuple[dict, dict]:
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    out = tmp_path / name
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*launcher, str(script), str(out), str(model), str(data)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "result.json").read_text()), torch.load(out / "weights.pt", weights_only=True)


@pytest.mark.slow
def test_two_processes_match_one_on_the_same_global_batch(tmp_path: Path) -> None:
    model = save_tiny_classifier(tmp_path / "model")
    data = write_easy_csv(tmp_path / "easy.csv", n=80)
    single, single_weights = run(tmp_path, "single", [sys.executable], model, data)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    double, double_weights = run(tmp_path, "double", torchrun, model, data)
    assert single["world_size"] == 1 and double["world_size"] == 2
    assert single["steps"] == double["steps"] > 0
    # The tiny model's gradients fit one DDP bucket: one all-reduce per optimizer step, not one per FreeLB pass.
    assert double["reductions"] == double["steps"]
    for one, two in zip(single["metrics"], double["metrics"], strict=True):
        assert one["step"] == two["step"]
        for key in ("train_loss", "val_clean_acc", "lr"):
            assert two[key] == pytest.approx(one[key], abs=1e-5), key
    for key, value in single_weights.items():
        torch.testing.assert_close(double_weights[key], value, atol=1e-5, rtol=1e-4, msg=key)
    assert any(not torch.equal(value, torch.zeros_like(value)) for value in single_weights.values())
