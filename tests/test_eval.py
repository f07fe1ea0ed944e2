"""advfast.eval on a classifier trained here on scikit-learn's digits: accuracies against direct attacks, the
per-class report against scikit-learn, the data forms, the gradient-masking checks, the report files."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import warnings

import pytest
import torch
from sklearn.metrics import classification_report, confusion_matrix
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import advfast
from advfast.eval import (
    CHECKS,
    GradientMaskingWarning,
    check_gradient_masking,
    evaluate_robustness,
    save_robustness_plot,
    save_training_curves,
    tolerance,
    write_report,
)

EPS = [0.05, 0.1, 0.2]
STEPS = 10
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def digits(digits_model):
    return digits_model


@pytest.fixture(scope="module")
def evaluated(digits):
    """The whole test set in one batch (so batch 0's generator is seeded with the seed itself), with the
    sanity checks, and every warning it issued."""
    model, x, y = digits
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_robustness(model, (x, y), eps=EPS, pgd_steps=STEPS, batch_size=1024, progress=False)
    return result, caught


class Quantized(nn.Module):
    """Shattered gradients (Athalye et al., 2018): rounds the input to the data's own 1/16 grid, which leaves
    the digits' values as they are but gives a zero input gradient (round' = 0)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 16) / 16)


def predicted(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


def accuracy_of(predictions: torch.Tensor, y: torch.Tensor) -> float:
    return (predictions == y).double().mean().item()


# ---- accuracies -----------------------------------------------------------------------------------------


def test_robust_accuracy_falls_with_eps(evaluated) -> None:
    result, _ = evaluated
    assert result.eps == EPS and result.num_classes == 10 and result.num_samples == 359
    assert result.clean_accuracy > 0.9
    for attack in ("fgsm", "pgd"):
        accuracies = result.accuracy[attack]
        assert len(accuracies) == len(EPS)
        assert all(later < earlier for earlier, later in itertools.pairwise(accuracies)), attack
        assert accuracies[0] <= result.clean_accuracy
        assert accuracies[-1] < 0.2, f"{attack} at eps={EPS[-1]} left {accuracies[-1]:.1%}"
    assert all(p <= f for f, p in zip(result.accuracy["fgsm"], result.accuracy["pgd"], strict=True))


def test_accuracies_equal_direct_attacks(digits, evaluated) -> None:
    """Every number equals the attack called by hand, sample for sample (one batch: its generator is
    seeded with the seed)."""
    model, x, y = digits
    result, _ = evaluated
    assert torch.equal(result.labels, y)
    assert torch.equal(result.clean_predictions, predicted(model, x))
    assert result.clean_accuracy == accuracy_of(predicted(model, x), y)
    i = 1
    x_pgd = advfast.pgd(
        model, x, y, eps=EPS[i], steps=STEPS, early_stop=True, generator=torch.Generator().manual_seed(result.seed)
    )
    assert torch.equal(result.predictions["pgd"][i], predicted(model, x_pgd))
    assert result.accuracy["pgd"][i] == accuracy_of(predicted(model, x_pgd), y)
    x_fgsm = advfast.fgsm(model, x, y, eps=EPS[i])
    assert result.accuracy["fgsm"][i] == accuracy_of(predicted(model, x_fgsm), y)
    assert torch.equal(result.correct("pgd", i), predicted(model, x_pgd) == y)


def test_same_seed_same_numbers_other_seed_other_starts(digits) -> None:
    model, x, y = digits

    def run(seed: int):
        return evaluate_robustness(
            model, (x, y), eps=[0.1], attacks=["pgd"], pgd_steps=5, seed=seed, sanity=False, progress=False
        )

    first, again, other = run(0), run(0), run(1)
    assert torch.equal(first.predictions["pgd"], again.predictions["pgd"])
    assert first.accuracy == again.accuracy
    assert not torch.equal(first.predictions["pgd"], other.predictions["pgd"]), "the seed must reach the starts"


def test_dataset_loader_and_tensors_give_the_same_numbers(digits) -> None:
    """Several batches (128 of 359 samples): the per-batch seeds make the three forms agree exactly, and
    batch b's random starts are seeded with seed * 1_000_003 + b as documented."""
    model, x, y = digits
    kwargs = dict(eps=[0.1], pgd_steps=5, batch_size=128, sanity=False)
    from_tensors = evaluate_robustness(model, (x, y), progress=False, **kwargs)
    from_dataset = evaluate_robustness(model, TensorDataset(x, y), progress=True, **kwargs)
    from_loader = evaluate_robustness(model, DataLoader(TensorDataset(x, y), batch_size=128), progress=False, **kwargs)
    for other in (from_dataset, from_loader):
        assert other.to_dict() | {"seconds": None} == from_tensors.to_dict() | {"seconds": None}
        assert torch.equal(other.predictions["pgd"], from_tensors.predictions["pgd"])
        assert torch.equal(other.predictions["fgsm"], from_tensors.predictions["fgsm"])
    x_adv = advfast.pgd(
        model, x[128:256], y[128:256], eps=0.1, steps=5, early_stop=True, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(from_tensors.predictions["pgd"][0, 128:256], predicted(model, x_adv))


def test_sanity_runs_pgd_when_only_fgsm_is_asked(digits) -> None:
    model, x, y = digits
    result = evaluate_robustness(model, (x[:200], y[:200]), eps=[0.2], attacks=["fgsm"], pgd_steps=5, progress=False)
    assert list(result.accuracy) == ["fgsm"] and result.per_class[1].name == "fgsm eps=0.2"
    assert result.sanity_checks == [
        name for name in CHECKS if name not in ("fgsm_not_below_strongest", "gradient_free_not_stronger")
    ]
    assert result.sanity_runs["pgd"].accuracy <= result.accuracy["fgsm"][0]
    assert result.warnings == []


def test_model_left_as_it_was(digits) -> None:
    model, x, y = digits
    model.train()
    buffers = [b.clone() for b in model.buffers()]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    try:
        evaluate_robustness(model, (x[:64], y[:64]), eps=[0.1], pgd_steps=2, sanity=False, progress=False)
        assert all(m.training for m in model.modules())
        assert all(torch.equal(b, saved) for b, saved in zip(model.buffers(), buffers, strict=True))
        for p, grad in zip(model.parameters(), grads, strict=True):
            assert (p.grad is None and grad is None) or torch.equal(p.grad, grad)
    finally:
        model.eval()


# ---- per-class report -----------------------------------------------------------------------------------


def test_per_class_report_matches_sklearn(digits, evaluated) -> None:
    model, x, y = digits
    result, _ = evaluated
    clean, attacked = result.per_class
    assert clean.name == "clean" and attacked.name == f"pgd eps={EPS[-1]:g}"
    for report, predictions in ((clean, predicted(model, x)), (attacked, result.predictions["pgd"][-1])):
        y_true, predictions = y.numpy(), predictions.numpy()
        expected = classification_report(y_true, predictions, labels=range(10), output_dict=True, zero_division=0)
        for c in range(10):
            assert report.precision[c] == pytest.approx(expected[str(c)]["precision"])
            assert report.recall[c] == pytest.approx(expected[str(c)]["recall"])
            assert report.f1[c] == pytest.approx(expected[str(c)]["f1-score"])
            assert report.support[c] == expected[str(c)]["support"] == int((y_true == c).sum())
        assert report.confusion == confusion_matrix(y_true, predictions, labels=range(10)).tolist()
        # Recall of class c is the accuracy on class c: the diagonal over the row.
        for c in range(10):
            assert report.recall[c] == pytest.approx(report.confusion[c][c] / sum(report.confusion[c]))


# ---- gradient-masking checks ----------------------------------------------------------------------------


def test_normal_model_is_not_flagged(evaluated) -> None:
    result, caught = evaluated
    assert not [w for w in caught if issubclass(w.category, GradientMaskingWarning)]
    assert result.warnings == []
    assert result.sanity_checks == [name for name in CHECKS if name != "gradient_free_not_stronger"]
    runs = result.sanity_runs
    assert runs["pgd"].accuracy == result.accuracy["pgd"][-1]
    assert (runs["more_steps"].steps, runs["more_restarts"].restarts) == (2 * STEPS, 2)
    assert runs["unbounded"].eps == 1.0 and not runs["unbounded"].random_start
    assert runs["unbounded"].accuracy <= result.chance_accuracy
    # Restarts keep every sample the first (identical) restart fooled.
    fooled = runs["pgd"].predictions != result.labels
    assert bool(((runs["more_restarts"].predictions != result.labels) | ~fooled).all())


def test_normal_model_is_not_flagged_in_l2(digits) -> None:
    model, x, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientMaskingWarning)
        result = evaluate_robustness(model, (x, y), eps=[0.5, 1.0, 2.0], norm="l2", pgd_steps=5, progress=False)
    assert result.warnings == []
    assert result.sanity_runs["unbounded"].eps == pytest.approx(math.sqrt(64))
    assert result.accuracy["pgd"][-1] < result.accuracy["pgd"][0] < result.clean_accuracy


def test_gradient_masked_model_is_flagged(digits, evaluated) -> None:
    model, x, y = digits
    masked = Quantized(model)
    with pytest.warns(GradientMaskingWarning, match="unbounded_reaches_chance") as record:
        result = evaluate_robustness(masked, (x, y), eps=[0.1, 0.2], pgd_steps=5, progress=False)
    # The quantization changes no digit, so only the attacks see a difference: they cannot move.
    assert result.clean_accuracy == evaluated[0].clean_accuracy
    assert result.accuracy["fgsm"] == [result.clean_accuracy] * 2
    assert result.sanity_runs["unbounded"].accuracy == result.clean_accuracy
    assert "unbounded_reaches_chance" in {w.check for w in result.warnings}
    assert len(record) == len(result.warnings)
    assert {str(w.message) for w in record} == {str(w) for w in result.warnings}


def test_checks_fire_beyond_the_tolerance_only(evaluated) -> None:
    """Each check on edited copies of a clean result: one sample's worth of a rise passes (tolerance
    max(0.5 points, 1/N) = 0.5 points for N = 359), two samples' worth fails."""
    result, _ = evaluated
    n = result.num_samples
    assert tolerance(n) == 0.005 and tolerance(100) == 0.01
    one, two = 1 / n, 2 / n

    def checks(**changes) -> set[str]:
        return {w.check for w in check_gradient_masking(dataclasses.replace(result, **changes), emit=False)}

    assert checks() == set()
    pgd = result.accuracy["pgd"]
    fgsm = result.accuracy["fgsm"]
    rising = [pgd[0], pgd[0] + two, pgd[0] + two]
    barely = [pgd[0], pgd[0] + one, pgd[0] + one]
    assert checks(accuracy={"fgsm": barely, "pgd": barely}) == set()
    assert checks(accuracy={"fgsm": rising, "pgd": rising}) == {"monotone_in_eps"}
    above_clean = [result.clean_accuracy + two, *fgsm[1:]]
    assert checks(accuracy={"fgsm": above_clean, "pgd": [0.0] * 3}) == {"monotone_in_eps"}
    assert checks(accuracy={"fgsm": [a - two for a in pgd], "pgd": pgd}) == {"fgsm_not_below_strongest"}
    assert checks(accuracy={"fgsm": [a - one for a in pgd], "pgd": pgd}) == set()

    runs = result.sanity_runs
    base = runs["pgd"].accuracy
    for run, check in (("more_steps", "monotone_in_steps"), ("more_restarts", "monotone_in_restarts")):
        worse = dataclasses.replace(runs[run], accuracy=base + two)
        assert checks(sanity_runs=runs | {run: worse}) == {check}
        assert checks(sanity_runs=runs | {run: dataclasses.replace(worse, accuracy=base + one)}) == set()
    above_chance = dataclasses.replace(runs["unbounded"], accuracy=result.chance_accuracy + two)
    assert checks(sanity_runs=runs | {"unbounded": above_chance}) == {"unbounded_reaches_chance"}

    with pytest.warns(GradientMaskingWarning, match="monotone_in_eps") as record:
        found = check_gradient_masking(dataclasses.replace(result, accuracy={"fgsm": rising, "pgd": rising}))
    assert [str(w.message) for w in record] == [str(w) for w in found]
    assert record[0].filename == __file__, "the warning should point at the caller"


# ---- reports --------------------------------------------------------------------------------------------


def test_report_files_round_trip(evaluated, tmp_path) -> None:
    result, _ = evaluated
    extra = {"train_seconds_per_epoch": 0.25, "model": "digits-cnn"}
    published = {"source": "a paper", "clean": 0.98, "pgd": {0.1: 0.5}, "autoattack": {"0.1": 0.4}}
    paths = write_report(result, tmp_path / "run", extra=extra, published=published)
    assert set(paths) == {"json", "md", "png"}
    document = json.loads(paths["json"].read_text())
    assert document["result"] == result.to_dict()
    assert document["extra"] == extra
    assert document["published"] == published | {"pgd": {"0.1": 0.5}}  # JSON keys are strings
    markdown = paths["md"].read_text()
    assert f"**{100 * result.clean_accuracy:.1f}% (published 98.0%)**" in markdown
    fgsm, pgd = (f"{100 * result.accuracy[attack][1]:.1f}%" for attack in ("fgsm", "pgd"))
    row = f"| 0.1 | {fgsm} | {pgd} (published 50.0%) |"
    assert row in markdown
    assert "autoattack at ε = 0.1: 40.0%" in markdown
    assert all(f"| {name} | passed |" in markdown for name in result.sanity_checks)
    assert "| train_seconds_per_epoch | 0.25 |" in markdown
    assert paths["png"].read_bytes().startswith(PNG_MAGIC)
    assert save_robustness_plot(result, tmp_path / "alone.png").read_bytes().startswith(PNG_MAGIC)


def test_training_curves_from_records_and_jsonl(tmp_path) -> None:
    records: list[dict] = [
        {"epoch": e, "train_loss": 1 / e, "train_acc": 1 - 1 / e, "val_clean_acc": 0.9, "note": "text"}
        for e in (1, 2, 3)
    ]
    records.append({"epoch": 3, "val_robust_acc": 0.4})
    assert save_training_curves(records, tmp_path / "a.png").read_bytes().startswith(PNG_MAGIC)
    lines = tmp_path / "metrics.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert save_training_curves(lines, tmp_path / "b.png").read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="metrics"):
        save_training_curves([], tmp_path / "c.png")
    with pytest.raises(ValueError, match="metrics"):
        save_training_curves([{"epoch": 1, "note": "text"}], tmp_path / "d.png")


# ---- bad arguments --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"eps": []}, "eps"),
        ({"eps": [0.1, -0.1]}, "eps"),
        ({"eps": [float("nan")]}, "eps"),
        ({"attacks": ("fgsm", "cw")}, "attacks"),
        ({"attacks": ("square",), "settings": {"square": {"queries": 0}}}, "queries"),
        ({"attacks": ("square",), "settings": {"square": {"steps": 3}}}, "steps"),
        ({"settings": {"apgd-ce": {"steps": 3}}}, "settings"),
        ({"settings": {"pgd": {"steps": 3}}}, "pgd_steps"),
        ({"attacks": ()}, "attacks"),
        ({"norm": "l3"}, "norm"),
        ({"pgd_steps": 0}, "pgd_steps"),
        ({"pgd_restarts": 0}, "pgd_restarts"),
        ({"batch_size": 0}, "batch_size"),
        ({"bounds": (1.0, 0.0)}, "bounds"),
        ({"data": "digits"}, "data"),
        ({"data": "empty tensors"}, "data"),
        ({"data": "empty dataset"}, "data"),
        ({"data": "float labels"}, "data"),
    ],
)
def test_bad_arguments_name_the_argument(digits, changes, name) -> None:
    model, x, y = digits
    changes = dict(changes)
    data = {
        "digits": "digits",
        "empty tensors": (x[:0], y[:0]),
        "empty dataset": TensorDataset(x[:0], y[:0]),
        "float labels": (x, y.float()),
    }.get(changes.pop("data", None), (x[:8], y[:8]))
    kwargs = {"eps": [0.1], "pgd_steps": 1, "sanity": False, "progress": False} | changes
    with pytest.raises(ValueError, match=name):
        evaluate_robustness(model, data, **kwargs)


def test_bad_published_and_extra(evaluated, tmp_path) -> None:
    result, _ = evaluated
    with pytest.raises(ValueError, match="published"):
        write_report(result, tmp_path, published={"pgd": {0.1: 45.0}}, plot=False)  # a percentage
    with pytest.raises(ValueError, match="published"):
        write_report(result, tmp_path, published={"pgd": {-0.1: 0.4}}, plot=False)
    with pytest.raises(ValueError, match="extra"):
        write_report(result, tmp_path, extra={"model": object()}, plot=False)
