"""The shared runtime: run folders (lock, probe, temporaries), atomic writes and the umask, checksummed
checkpoints, the run loop's data-safety rules, seeds, configs, and the health checks of a finished run."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from advfast.runtime import (
    CheckpointError,
    RunFolder,
    RunFolderError,
    atomic_write_text,
    derive_seed,
    load_checkpoint,
    save_checkpoint,
)
from advfast.runtime import files as runtime_files
from advfast.train import TrainConfig, Trainer, diagnose, load_classifier


def tiny_config(out: Path, **changes) -> TrainConfig:
    base = dict(data="digits", method="pgd", eps=0.1, steps=2, epochs=1, batch_size=128, val_size=100,
                val_steps=2, out=str(out), progress=False, report=False)  # fmt: skip
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def finished_run(digits_data, tmp_path_factory) -> Path:
    """A one-epoch digits run, finished; tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("runs") / "done"
    Trainer(tiny_config(out), data=digits_data).fit()
    return out


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


# ---- where files go ----------------------------------------------------------------------------------------


def test_resume_writes_into_the_folder_it_was_given_not_the_recorded_one(finished_run, digits_data, tmp_path):
    original = {p.name: p.read_bytes() for p in finished_run.iterdir()}
    copy = copy_run(finished_run, tmp_path / "copy")
    trainer = Trainer.resume(copy, epochs=2)
    assert trainer.out == copy and trainer.config.out == str(copy)
    trainer.fit()
    assert {p.name: p.read_bytes() for p in finished_run.iterdir()} == original, "the original run was touched"
    assert len((copy / "metrics.jsonl").read_text().splitlines()) == 2
    assert load_checkpoint(copy / "last.pt")["progress"]["epoch"] == 2


def test_a_relative_out_resumed_from_elsewhere_stays_in_its_folder(finished_run, tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    copy = copy_run(finished_run, tmp_path / "a" / "run")
    # Rewrite the recorded out as relative, then resume from another working directory.
    record = load_checkpoint(copy / "last.pt")
    payload = {k: v for k, v in record.items() if k not in ("format", "version", "role", "checksum")}
    payload["config"]["out"] = "run"
    save_checkpoint(copy / "last.pt", payload, role="classifier")
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    trainer = Trainer.resume(tmp_path / "a" / "run", epochs=2)
    trainer.fit()
    assert not (tmp_path / "b" / "run").exists(), "a second copy of the run was started"
    assert load_checkpoint(tmp_path / "a" / "run" / "last.pt")["progress"]["epoch"] == 2


def test_a_fresh_run_never_overwrites_a_run(finished_run, digits_data, tmp_path):
    copy = copy_run(finished_run, tmp_path / "copy")
    before = (copy / "last.pt").read_bytes()
    trainer = Trainer(tiny_config(copy), data=digits_data)
    with pytest.raises(RunFolderError, match=r"already holds a run .* --resume"):
        trainer.fit()
    assert (copy / "last.pt").read_bytes() == before


def test_a_second_job_on_the_same_folder_is_refused(digits_data, tmp_path):
    out = tmp_path / "busy"
    with RunFolder(out):
        with pytest.raises(RunFolderError, match="in use by another advfast job"):
            RunFolder(out).acquire()
        trainer = Trainer(tiny_config(out), data=digits_data)
        with pytest.raises(RunFolderError, match="in use"):
            trainer.fit()
        assert not (out / "last.pt").exists()
    RunFolder(out).acquire().release()  # free again once the first job let go
    assert sorted(p.name for p in out.iterdir()) == [], "taking a folder leaves nothing in it"


def test_taking_a_folder_removes_temporaries_a_killed_save_left(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".last.pt.abc_1234.tmp"
    stale.write_bytes(b"half a checkpoint")
    kept = [out / "notes.tmp", out / ".hidden.tmp", out / "last.pt"]
    for path in kept:
        path.write_bytes(b"user data")
    with RunFolder(out):
        pass
    assert not stale.exists()
    assert all(path.read_bytes() == b"user data" for path in kept)


def test_an_unwritable_or_full_folder_fails_before_any_work(digits_data, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunFolderError, match="cannot write into"):
        RunFolder(blocker / "run").acquire()
    with pytest.raises(RunFolderError, match="not enough free space"):
        RunFolder(tmp_path / "full").acquire(needed_bytes=2**62)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("advfast.runtime.run_folder.tempfile.mkstemp", full_disk)
    trainer = Trainer(tiny_config(tmp_path / "nospace"), data=digits_data)
    with pytest.raises(RunFolderError, match="No space left on device"):
        trainer.fit()
    assert trainer.progress.step == 0


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_atomic_writes_respect_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "report.md", "hello")
        save_checkpoint(tmp_path / "last.pt", {"w": torch.ones(1)}, role="classifier")
        plain = tmp_path / "plain.txt"
        plain.write_text("compare")
    finally:
        os.umask(previous)
    expected = stat.S_IMODE(plain.stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("report.md", "last.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(b"old contents")

    def fail(file):
        file.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        runtime_files.atomic_write(path, fail)
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]


# ---- checkpoints -----------------------------------------------------------------------------------------------


def flip_exponent_bits(path: Path, tensor: torch.Tensor) -> None:
    """Flip the top exponent bit of the first float of ``tensor`` where its bytes sit in the file."""
    data = bytearray(path.read_bytes())
    needle = tensor.detach().contiguous().view(-1)[:8].numpy().tobytes()
    at = data.find(needle)
    assert at >= 0, "the tensor's bytes are not stored verbatim"
    data[at + 3] ^= 0x40  # float32 little-endian: byte 3 holds the sign and the top exponent bits
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_a_weight_is_caught_at_load(finished_run, tmp_path):
    copy = copy_run(finished_run, tmp_path / "copy")
    weight = load_classifier(copy).model.state_dict()["0.weight"]
    flip_exponent_bits(copy / "last.pt", weight)
    for load in (load_classifier, lambda p: Trainer.resume(p), lambda p: load_checkpoint(p / "last.pt")):
        with pytest.raises(CheckpointError, match="corrupt checkpoint"):
            load(copy)


def test_checkpoints_name_what_they_are(finished_run, tmp_path):
    generator = save_checkpoint(tmp_path / "generator.pt", {"kind": "cgan"}, role="generator")
    with pytest.raises(CheckpointError, match=r"is a generator checkpoint \(advfast augment\), not a classifier"):
        load_classifier(generator)
    with pytest.raises(CheckpointError, match="is a JSON file, not a checkpoint"):
        load_classifier(finished_run / "config.json")
    incomplete = save_checkpoint(tmp_path / "incomplete.pt", {"model": {}}, role="classifier")
    with pytest.raises(CheckpointError, match=r"incomplete checkpoint: missing \['config'"):
        load_classifier(incomplete)
    with pytest.raises(CheckpointError, match="no such run folder or checkpoint file"):
        load_classifier(tmp_path / "nothing-here")
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "advfast-checkpoint", "object": RunFolder(tmp_path)}, pickled)
    with pytest.raises(CheckpointError, match="holds objects other than tensors and plain data"):
        load_checkpoint(pickled)


def test_non_finite_weights_are_an_error(finished_run, tmp_path):
    record = load_checkpoint(finished_run / "last.pt")
    payload = {k: v for k, v in record.items() if k not in ("format", "version", "role", "checksum")}
    payload["model"]["0.weight"][0, 0, 0, 0] = math.nan
    path = save_checkpoint(tmp_path / "nan.pt", payload, role="classifier")  # valid checksum, NaN weight
    with pytest.raises(CheckpointError, match=r"weights hold NaN or Inf \(0\.weight\)"):
        load_classifier(path)


# ---- seeds, configs, health ----------------------------------------------------------------------------------


def test_derived_seeds_differ_by_coordinate_and_repeat_for_the_same_one():
    seeds = {derive_seed(0, rank, epoch, batch) for rank in range(3) for epoch in range(10) for batch in range(50)}
    assert len(seeds) == 3 * 10 * 50
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3)
    assert all(0 <= s < 2**62 for s in seeds)


def test_config_records_round_trip_and_foreign_fields_are_refused(tmp_path):
    config = tiny_config(tmp_path / "x", eval_eps=[0.05, 0.1])
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"not a training configuration: unknown fields \['generator'\]"):
        TrainConfig.from_dict({**config.to_dict(), "generator": "cgan"})


def test_automatic_values_are_resolved_and_saved(finished_run):
    saved = load_checkpoint(finished_run / "last.pt")["config"]
    assert saved["model"] == "digits-cnn" and saved["model_mode"] == "as_is" and saved["overfit_guard"] == 0.0
    assert saved["eval_eps"] == [round(0.1 / 3, 6), round(0.2 / 3, 6), 0.1]
    assert TrainConfig(data="digits").resolve(eps=0.1, model="digits-cnn").eps == 0.1
    assert TrainConfig(method="trades").resolve(eps=0.3, model="m").model_mode == "eval"
    assert TrainConfig(method="fgsm-rs").resolve(eps=0.3, model="m").overfit_guard == 0.2


def test_health_checks_say_when_a_run_learned_nothing_or_collapsed():
    healthy = [{"train_loss": 1.0, "val_clean_acc": 0.8}, {"train_loss": 0.3, "val_clean_acc": 0.95}]
    assert diagnose(healthy, 10) == []
    at_chance = [{"train_loss": 2.31, "val_clean_acc": 0.40}]
    warnings = diagnose(at_chance, 10)
    assert any("uniform guess" in w for w in warnings) and all("--eps-warmup" in w for w in warnings)
    assert any("near chance" in w for w in diagnose([{"train_loss": 1.0, "val_clean_acc": 0.15}], 10))
    # An adversarial objective's loss (on perturbed inputs) near ln 2 beside a clean accuracy that shows learning.
    assert diagnose([{"train_loss": 0.646, "val_clean_acc": 0.80}], 2) == []
    assert any("uniform guess" in w for w in diagnose([{"train_loss": 0.646, "val_clean_acc": 0.70}], 2))
    assert any("uniform guess" in w for w in diagnose([{"train_loss": 0.646}], 2)), "no accuracy to go by"
    collapsed = [{"train_loss": 0.5, "val_clean_acc": 0.9}, {"train_loss": 0.6, "val_clean_acc": 0.5}]
    assert any("collapsed from 90.0% (epoch 1) to 50.0%" in w for w in diagnose(collapsed, 10))


def test_a_run_at_chance_says_so_at_the_end(digits_data, tmp_path, capsys):
    # A learning rate too small to move the weights: the run ends at chance, and must say so in stdout and
    # in its report.
    config = tiny_config(tmp_path / "still", lr=1e-9, report=True, eval_steps=2, eval_attacks=["fgsm", "apgd-ce"])
    trainer = Trainer(config, data=digits_data)
    trainer.fit()
    out = capsys.readouterr().out
    assert json.loads((tmp_path / "still" / "report.json").read_text())["result"]["attacks"] == ["fgsm", "apgd-ce"]
    assert any("uniform guess" in w for w in trainer.warnings), trainer.progress.metrics
    assert "warning: the training loss ended at" in out
    assert "## Warnings" in (tmp_path / "still" / "report.md").read_text()
    assert "test (359 samples, eps 0.1): clean" in out, "the report's headline is printed"
