"""``advfast train`` and ``advfast eval`` on text, end to end on a tiny random BERT folder and an easy CSV: the
run folder's files, the eval report, resume, and errors (one line, naming the flag) for options of the wrong
kind."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from text_support import one_thread, save_tiny_classifier, write_easy_csv  # noqa: F401

from advfast.cli import build_parser, main
from advfast.runtime import load_checkpoint


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("text-cli")
    return {"model": save_tiny_classifier(root / "model"), "data": write_easy_csv(root / "easy.csv", n=80)}


def fast_train(files) -> list[str]:
    return [
        "train", "--data", files["data"], "--model", files["model"], "--method", "pgd", "--eps", "0.05",
        "--steps", "2", "--epochs", "2", "--batch-size", "8", "--lr", "3e-3", "--eval-eps", "0.05", "0.1",
        "--eval-steps", "3", "--eval-restarts", "2", "--eval-budgets", "1", "2", "--no-progress",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def text_run(files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "easy-pgd"
    assert main([str(a) for a in [*fast_train(files), "--out", out]]) == 0
    return out


def test_train_help_lists_the_text_options():
    _, subcommands = build_parser()
    text = subcommands["train"].format_help()
    for flag in ("--max-length", "--init-mag", "--warmup", "--eval-budgets", "--eval-limit", "--text-column"):
        assert flag in text, flag
    for method in ("freelb", "smart", "r3f", "fgm", "trades"):
        assert method in text, method
    assert "text only:" in text and "images only:" in text
    assert "rotten-tomatoes" in subcommands["train"].format_help()


def test_train_on_text_writes_the_run_folder_and_its_report(text_run):
    for name in ("config.json", "last.pt", "metrics.jsonl", "report.json", "report.md", "robustness.png",
                 "training_curves.png"):  # fmt: skip
        assert (text_run / name).is_file(), name
    assert load_checkpoint(text_run / "last.pt")["role"] == "text-classifier"
    config = json.loads((text_run / "config.json").read_text())
    assert config["method"] == "pgd" and config["eps"] == 0.05 and config["alpha"] == pytest.approx(2.5 * 0.05 / 2)
    report = json.loads((text_run / "report.json").read_text())
    result = report["result"]
    assert result["eps"] == [0.05, 0.1] and result["budgets"] == [1, 2]
    assert result["steps"] == 3 and result["restarts"] == 2
    assert 0.0 <= result["pgd_accuracy"][-1] <= result["pgd_accuracy"][0] <= result["clean_accuracy"]
    assert result["substitution_accuracy"][-1] <= result["substitution_accuracy"][0] <= result["clean_accuracy"]
    assert set(result["classification_report"]) >= {"0", "1", "macro avg", "accuracy"}
    assert result["count"] == 16  # the whole test split: 20% of 80
    markdown = (text_run / "report.md").read_text()
    assert "## Classification report (clean)" in markdown and "| tokens changed (at most) |" in markdown


def test_eval_on_a_text_run_writes_its_report_into_the_eval_folder(text_run, capsys):
    code, out, err = run_cli(
        capsys, "eval", text_run, "--eps", "0.2", "0.1", "--discrete", "1", "3", "--limit", "6", "--steps", "2",
        "--restarts", "1", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert re.search(r"^test \(6 examples\): clean .*embedding PGD-2 eps 0.2: .*3 token substitution", out, re.M)
    report = json.loads((text_run / "eval" / "report.json").read_text())["result"]
    assert report["count"] == 6 and report["eps"] == [0.1, 0.2] and report["budgets"] == [1, 3]
    for name in ("report.md", "robustness.png", "training_curves.png"):
        assert (text_run / "eval" / name).is_file(), name
    assert not list((text_run / "eval").glob("progress*")), "progress files are removed once the report is written"
    assert not list(text_run.glob("progress*")), "and so are the training report's"
    assert json.loads((text_run / "report.json").read_text())["result"]["count"] == 16, "training report kept"
    code, _, err = run_cli(capsys, "eval", text_run / "last.pt", "--limit", "4", "--out", text_run / "quick",
                           "--no-progress")  # fmt: skip
    assert code == 0, err
    assert json.loads((text_run / "quick" / "report.json").read_text())["result"]["eps"] == [0.05, 0.1]


def test_train_resume_continues_a_text_run(text_run, tmp_path, capsys):
    import shutil

    copy = shutil.copytree(text_run, tmp_path / "copy")
    code, out, err = run_cli(capsys, "train", "--resume", copy, "--epochs", "3", "--no-report")
    assert code == 0, err
    assert f"resuming {copy} at epoch 3" in out and re.search(r"^epoch 3/3: ", out, re.M)
    assert load_checkpoint(copy / "last.pt")["progress"]["epoch"] == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--data", "{data}", "--method", "trades"], "--method trades is a method for images; on text data"),
        (["train", "--data", "digits", "--method", "freelb"], "--method freelb is a method for text; on image data"),
        (["train", "--data", "{data}", "--eps-warmup", "0.2"], "--eps-warmup applies to images only"),
        (["train", "--data", "digits", "--max-length", "64"], "--max-length applies to text only"),
        (
            ["train", "--data", "{data}", "--model", "{model}", "--method", "fgm", "--steps", "2", "--out", "{tmp}/x"],
            "steps does not apply to method fgm",
        ),
        (
            ["train", "--data", "{data}", "--method", "freelb", "--include-clean", "--out", "{tmp}/x"],
            "include_clean does not apply to method freelb",
        ),
        (["train", "--data", "{data}", "--model", "{model}", "--out", "{run}"], "already holds a run (last.pt)"),
        (["eval", "{run}", "--attack", "pgd"], "--attack applies to image runs only"),
        (["eval", "{run}", "--no-sanity"], "--no-sanity applies to image runs only"),
        (["eval", "{run}", "--discrete", "0"], "argument --discrete: must be >= 1"),
    ],
)
def test_text_errors_are_one_line_naming_the_flag(files, text_run, tmp_path, capsys, argv, message):
    argv = [a.format(data=files["data"], model=files["model"], run=text_run, tmp=tmp_path) for a in argv]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and message in err, err
    assert err.count("\n") <= 1 or "usage:" in err, "one line, not a traceback"


def test_discrete_on_an_image_run_is_refused(tmp_path, capsys):
    out = tmp_path / "digits"
    code, _, err = run_cli(
        capsys, "train", "--data", "digits", "--method", "standard", "--epochs", "1", "--val-size", "50",
        "--no-report", "--no-progress", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(capsys, "eval", out, "--discrete", "1")
    assert code == 2 and "--discrete (token substitution) applies to text runs only" in err, err
