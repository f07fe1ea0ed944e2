"""A long evaluation killed part-way resumes from its progress file and gives the uninterrupted numbers; a
progress file of another evaluation (settings, weights, data) is refused, never mixed in or discarded."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from advfast.eval import evaluate_robustness, report_run
from advfast.eval.progress import EvalProgressMismatch
from advfast.runtime import CheckpointError

BATCH = 64  # the 359 digits test images: 6 batches


class Killed(Exception):
    """Stands for the kill of a long evaluation."""


class Counting(nn.Module):
    """The digits model, counting its forward passes."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


class Dying(Dataset):
    """(x, y) pairs that raise :class:`Killed` when sample ``dies_at`` is read (None: never)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, dies_at: int | None) -> None:
        self.x, self.y, self.dies_at = x, y, dies_at

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int):
        if index == self.dies_at:
            raise Killed
        return self.x[index], self.y[index]


def evaluate(model, data, checkpoint=None, **changes):
    kwargs = dict(eps=[0.05, 0.1], attacks=["fgsm", "pgd", "autoattack"], pgd_steps=5, batch_size=BATCH,
                  settings={"autoattack": {"stages": ["apgd-ce"]}}, progress=False)  # fmt: skip
    return evaluate_robustness(model, data, checkpoint=checkpoint, **(kwargs | changes))


def quick(model, data, checkpoint, **changes):
    """FGSM and PGD-5, no sanity runs: for the checks of what is refused."""
    base = {"attacks": ["fgsm", "pgd"], "sanity": False, "settings": None}
    return evaluate(model, data, checkpoint, **(base | changes))


def same_numbers(a, b) -> None:
    """Equal but for the seconds spent."""

    def numbers(result):
        record = result.to_dict() | {"seconds": None}
        record["stages"] = {name: stage | {"seconds": None} for name, stage in record["stages"].items()}
        return record

    assert numbers(a) == numbers(b)
    assert torch.equal(a.clean_predictions, b.clean_predictions)
    for attack in a.predictions:
        assert torch.equal(a.predictions[attack], b.predictions[attack]), attack
    for name in a.stages:
        assert torch.equal(a.stages[name].broken_by, b.stages[name].broken_by), name
    for key, run in a.sanity_runs.items():
        assert torch.equal(run.predictions, b.sanity_runs[key].predictions), key


@pytest.fixture(scope="module")
def counting(digits_model):
    model, x, y = digits_model
    return Counting(model), x, y


@pytest.fixture(scope="module")
def uninterrupted(counting):
    model, x, y = counting
    return evaluate(model, (x, y))


def test_a_killed_evaluation_resumes_to_the_uninterrupted_numbers(counting, uninterrupted, tmp_path) -> None:
    model, x, y = counting
    progress = tmp_path / "progress.pt"
    with pytest.raises(Killed):
        evaluate(model, Dying(x, y, dies_at=3 * BATCH + 5), progress)  # dies reading batch 3
    assert progress.is_file(), "batches 0-2 must be on disk"
    model.calls = 0
    resumed = evaluate(model, Dying(x, y, dies_at=None), progress)
    same_numbers(resumed, uninterrupted)
    calls_resumed = model.calls
    model.calls = 0
    evaluate(model, (x[3 * BATCH :], y[3 * BATCH :]))
    # The resumed run attacked batches 3-5 only (as many forward passes as evaluating them alone, give or take
    # early stops: the same per-batch seeds make them equal).
    assert calls_resumed == model.calls
    assert resumed.seconds["total"] >= resumed.seconds["clean"]


def test_a_finished_progress_file_gives_the_result_without_attacking(counting, uninterrupted, tmp_path) -> None:
    model, x, y = counting
    progress = tmp_path / "progress.pt"
    evaluate(model, (x, y), progress)
    model.calls = 0
    again = evaluate(model, (x, y), progress)
    assert model.calls == 0
    same_numbers(again, uninterrupted)


@pytest.mark.parametrize(
    ("changes", "named"),
    [({"eps": [0.05, 0.2]}, "eps"), ({"seed": 1}, "seed"), ({"pgd_steps": 6}, "settings"),
     ({"sanity": True}, "sanity"), ({"attacks": ["fgsm"]}, "attacks"), ({"norm": "l2"}, "norm")],
)  # fmt: skip
def test_another_evaluations_progress_is_refused_and_kept(counting, tmp_path, changes, named) -> None:
    model, x, y = counting
    progress = tmp_path / "progress.pt"
    quick(model, (x[:BATCH], y[:BATCH]), progress)
    before = progress.read_bytes()
    with pytest.raises(EvalProgressMismatch, match=named):
        quick(model, (x[:BATCH], y[:BATCH]), progress, **changes)
    assert progress.read_bytes() == before


def test_other_weights_or_data_are_refused(counting, tmp_path) -> None:
    model, x, y = counting
    progress = tmp_path / "progress.pt"
    quick(model, (x[: 2 * BATCH], y[: 2 * BATCH]), progress)
    changed = copy.deepcopy(model)
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-3
    with pytest.raises(EvalProgressMismatch, match="model"):
        quick(changed, (x[: 2 * BATCH], y[: 2 * BATCH]), progress)
    y_other = y[: 2 * BATCH].clone()
    y_other[BATCH + 1] = (y_other[BATCH + 1] + 1) % 10
    with pytest.raises(EvalProgressMismatch, match="batch 1 of the data differs"):
        quick(model, (x[: 2 * BATCH], y_other), progress)
    with pytest.raises(EvalProgressMismatch, match="gave 1 batches, fewer than the 2"):
        quick(model, (x[:BATCH], y[:BATCH]), progress)


def test_a_corrupt_progress_file_is_an_error(counting, tmp_path) -> None:
    model, x, y = counting
    progress = tmp_path / "progress.pt"
    quick(model, (x[:BATCH], y[:BATCH]), progress)
    data = bytearray(progress.read_bytes())
    data[len(data) // 2] ^= 0xFF
    progress.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"progress\.pt: corrupt"):
        quick(model, (x[:BATCH], y[:BATCH]), progress)


def test_the_report_resumes_and_removes_the_progress_file_once_written(counting, tmp_path) -> None:
    from advfast.data import DataSplits
    from advfast.data.splits import TensorImages

    model, x, y = counting
    part = TensorImages(x[:BATCH], y[:BATCH])
    data = DataSplits(name="digits", train=part, val=part, test=part, classes=[str(c) for c in range(10)])
    kwargs = dict(eps=[0.1], norm="linf", steps=3, restarts=1, attacks=["fgsm", "pgd"], sanity=False)
    progress = tmp_path / "progress.pt"
    evaluate_robustness(model, (x[:BATCH], y[:BATCH]), eps=[0.1], attacks=["fgsm", "pgd"], pgd_steps=3,
                        sanity=False, progress=False, checkpoint=progress)  # fmt: skip
    said: list[str] = []
    model.calls = 0
    paths = report_run(model, data, tmp_path, title="t", progress=False, say=said.append, **kwargs)
    assert model.calls == 0, "the evaluation on disk was complete: nothing to attack"
    assert said[0] == f"resuming the evaluation kept in {progress}"
    assert paths["json"].is_file()
    assert not progress.exists()
