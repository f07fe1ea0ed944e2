"""The command line end to end on digits: every subcommand, its help, its flags, its errors (one line, exit
status 2, naming the file or argument), and the run-folder conventions."""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from advfast.cli import COMMANDS, build_parser, main
from advfast.runtime import RunFolder, load_checkpoint

FAST_TRAIN = ["--data", "digits", "--epochs", "1", "--steps", "2", "--val-size", "100", "--val-steps", "2",
              "--eval-steps", "2", "--no-progress"]  # fmt: skip


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """``advfast train`` with its report, once for the module."""
    out = tmp_path_factory.mktemp("cli") / "digits-pgd"
    assert main(["train", *FAST_TRAIN, "--out", str(out)]) == 0
    return out


# ---- help ----------------------------------------------------------------------------------------------------


def test_every_option_of_every_command_has_help_and_sane_defaults():
    _, subcommands = build_parser()
    assert [c.NAME for c in COMMANDS] == list(subcommands)
    for name, parser in subcommands.items():
        text = parser.format_help()
        assert "examples:" in text and f"advfast {name}" in text
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest}: no help text"
            assert "None" not in action.help and "nan" not in action.help, f"{name} {action.option_strings}"
            assert action.help.count("default:") <= 1, f"{name} {action.option_strings}: default shown twice"


def test_top_level_help_labels_each_commands_examples():
    parser, _ = build_parser()
    text = parser.format_help()
    for command in COMMANDS:
        assert re.search(rf"^{command.NAME}:$", text, re.MULTILINE), command.NAME
    assert "examples:" not in text, "one examples section, labelled by command, not a block per command"


def test_an_unknown_option_shows_the_subcommands_usage(capsys):
    code, _, err = run_cli(capsys, "train", "--bogus", "3")
    assert code == 2 and "usage: advfast train" in err and "unrecognized arguments: --bogus 3" in err


def test_the_resume_hint_after_a_step_limit_continues_the_run(tmp_path, capsys):
    out = tmp_path / "cut"
    code, stdout, _ = run_cli(capsys, "train", *FAST_TRAIN, "--max-steps", "2", "--no-report", "--out", out)
    hint = re.search(r"^stopped: max_steps 2 reached \(resume with: advfast (train --resume .*)\)$", stdout, re.M)
    assert code == 0 and hint, stdout
    code, stdout, _ = run_cli(capsys, *hint.group(1).split(), "--no-report")
    assert code == 0 and "stopped:" not in stdout, stdout
    assert load_checkpoint(out / "last.pt")["progress"]["step"] > 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--elements", "16X"], "argument --elements: expected a count such as 1M"),
        (["bench", "--elements", "0"], "argument --elements: must be at least 3072"),
        (["bench", "--repeats", "0"], "argument --repeats: must be >= 1, got 0"),
        (["train", "--epochs", "two"], "argument --epochs: expected an integer, got 'two'"),
        (["train", "--lr", "inf"], "argument --lr: must be finite"),
        (["attack", "x", "--eps", "0.1", "--out", "a.npz", "--limit", "-5"], "argument --limit: must be >= 0"),
        (["attack", "x", "--eps", "0.1", "--out", "a.npz", "--batch-size", "0"], "argument --batch-size: must be"),
        (["eval", "x", "--eps", "-1"], "argument --eps: must be >= 0"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and message in err, err


# ---- train ---------------------------------------------------------------------------------------------------


def test_train_without_progress_prints_each_epoch_and_the_reports_headline(trained_run, capsys):
    lines = (trained_run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    for name in ("config.json", "last.pt", "report.json", "report.md", "robustness.png", "training_curves.png"):
        assert (trained_run / name).is_file(), name
    out = trained_run.parent / "again"
    code, stdout, _ = run_cli(capsys, "train", *FAST_TRAIN, "--epochs", "2", "--no-report", "--out", out)
    assert code == 0
    assert re.search(r"^epoch 1/2: .*train_loss .*val_robust_acc", stdout, re.MULTILINE)
    assert re.search(r"^epoch 2/2: ", stdout, re.MULTILINE)
    assert f"run folder: {out}" in stdout


def test_train_resume_alone_continues_the_out_folder(trained_run, tmp_path, capsys):
    copy = shutil.copytree(trained_run, tmp_path / "copy")
    code, stdout, _ = run_cli(capsys, "train", "--resume", "--out", copy, "--epochs", "2", "--no-report")
    assert code == 0 and f"resuming {copy} at epoch 2" in stdout
    assert load_checkpoint(copy / "last.pt")["progress"]["epoch"] == 2
    assert load_checkpoint(trained_run / "last.pt")["progress"]["epoch"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--resume"], "--resume without a folder continues the --out folder"),
        (["--resume", "{run}", "--out", "{tmp}/other"], "continues that run in its own folder"),
        (["--out", "{run}"], "already holds a run (last.pt); continue it with --resume"),
        (["--resume", "{tmp}/empty"], "no last.pt to resume"),
        (["--eps", "0.1", "--method", "madry"], "argument --method: invalid choice"),
        (["--data", "{tmp}/nothing.npz"], "data must be one of"),
    ],
)
def test_train_errors(trained_run, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    argv = [a.format(run=trained_run, tmp=tmp_path) for a in argv]
    code, _, err = run_cli(capsys, "train", *argv)
    assert code == 2 and message in err, err
    assert err.count("\n") <= 1 or "usage:" in err, "one line, not a traceback"


def test_a_busy_run_folder_is_refused(tmp_path, capsys):
    with RunFolder(tmp_path / "busy"):
        code, _, err = run_cli(capsys, "train", *FAST_TRAIN, "--out", tmp_path / "busy")
    assert code == 2 and "in use by another advfast job" in err


# ---- eval and attack -----------------------------------------------------------------------------------------


def test_eval_takes_a_run_folder_and_never_overwrites_the_training_report(trained_run, capsys):
    before = (trained_run / "report.json").read_bytes()
    code, stdout, _ = run_cli(capsys, "eval", trained_run, "--eps", "0.1", "--steps", "2", "--no-sanity",
                              "--no-progress")  # fmt: skip
    assert code == 0 and "test (359 samples, eps 0.1): clean" in stdout
    assert (trained_run / "eval" / "report.md").is_file()
    assert (trained_run / "report.json").read_bytes() == before


def test_eval_resumes_its_own_progress_and_refuses_another(trained_run, tmp_path, capsys):
    """A progress file left by a killed `advfast eval` of the same settings is resumed (and removed once the
    report is written); one of other settings is refused, naming what differs, and left in place."""
    from advfast.eval import evaluate_robustness
    from advfast.train import load_classifier

    trained = load_classifier(trained_run)
    test = trained.data().test
    out = tmp_path / "eval"
    evaluate_robustness(trained.model, (test.x, test.y), eps=[0.1], attacks=["pgd"], pgd_steps=2, sanity=False,
                        progress=False, seed=trained.config.seed, checkpoint=out / "progress.pt")  # fmt: skip
    argv = ["eval", trained_run, "--attack", "pgd", "--steps", "2", "--no-sanity", "--no-progress", "--out", out]
    code, _, err = run_cli(capsys, *argv, "--eps", "0.2")
    assert code == 2 and "differs in eps" in err and "Traceback" not in err, err
    assert (out / "progress.pt").is_file()
    code, stdout, _ = run_cli(capsys, *argv, "--eps", "0.1")
    assert code == 0 and f"resuming the evaluation kept in {out / 'progress.pt'}" in stdout
    assert (out / "report.json").is_file() and not (out / "progress.pt").exists()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("{run}/config.json", "is a JSON file, not a checkpoint: give the run folder or its last.pt"),
        ("{tmp}/generator.pt", "is a generator checkpoint (advfast augment), not a classifier"),
        ("{tmp}/missing", "no such run folder or checkpoint file"),
        ("{tmp}/garbage.pt", "not a readable advfast checkpoint"),
    ],
)
def test_eval_and_attack_say_what_a_wrong_file_is(trained_run, tmp_path, capsys, target, message):
    from advfast.runtime import save_checkpoint

    save_checkpoint(tmp_path / "generator.pt", {"kind": "cgan"}, role="generator")
    (tmp_path / "garbage.pt").write_bytes(b"\x00" * 64)
    target = target.format(run=trained_run, tmp=tmp_path)
    for argv in (["eval", target, "--eps", "0.1"], ["attack", target, "--eps", "0.1", "--out", tmp_path / "a.npz"]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and message in err and "Traceback" not in err, err


def test_attack_writes_its_npz_atomically_and_checks_the_output_first(trained_run, tmp_path, capsys):
    out = tmp_path / "adv.npz"
    code, stdout, _ = run_cli(capsys, "attack", trained_run, "--eps", "0.1", "--steps", "3", "--limit", "40",
                              "--out", out)  # fmt: skip
    assert code == 0 and "40 samples" in stdout
    with np.load(out) as saved:
        assert saved["x"].shape == saved["x_clean"].shape == (40, 1, 8, 8) and saved["y"].shape == (40,)
        assert np.abs(saved["x"] - saved["x_clean"]).max() <= 0.1 + 1e-6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adv.npz"], "no temporary file left"
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    code, _, err = run_cli(capsys, "attack", trained_run, "--eps", "0.1", "--out", blocker / "adv.npz")
    assert code == 2 and "cannot write into" in err


# ---- augment and bench ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_augment_trains_judges_and_resumes(tmp_path, capsys):
    out = tmp_path / "gen"
    argv = ["augment", "--data", "digits", "--model", "vae", "--epochs", "1", "--quality-samples", "200",
            "--classifier-epochs", "1", "--sample-every", "0", "--no-progress", "--out", out]  # fmt: skip
    code, stdout, _ = run_cli(capsys, *argv)
    assert code == 0 and "label accuracy" in stdout and "Frechet distance" in stdout
    for name in ("generator.pt", "samples.png", "quality.json", "generator_metrics.jsonl", "classifier/last.pt"):
        assert (out / name).is_file(), name
    code, stdout, _ = run_cli(capsys, "augment", "--resume", out, "--epochs", "2", "--no-progress")
    assert code == 0 and f"resuming {out} at epoch 2" in stdout


def test_bench_prints_its_table(capsys):
    code, stdout, _ = run_cli(capsys, "bench", "--elements", "64k", "--repeats", "2")
    assert code == 0 and "fused L-inf step (advfast)" in stdout and "GB/s" in stdout
