"""APGD, Square and advfast.eval.autoattack on the digits CNN trained once per session (conftest): APGD against a
plain, uncompacted statement of its schedule, compaction, Square's invariants, the ensemble's worst case per
point, the attack registry, the CLI's --attack flags, the caller's model left as it was, and bad arguments."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advfast.attacks import apgd, apgd_targeted, square
from advfast.attacks.apgd import checkpoints
from advfast.attacks.dlr import dlr_targeted
from advfast.attacks.square import margin, p_schedule
from advfast.eval import ATTACKS, autoattack, evaluate_robustness, get_attack, run_ensemble

EPS = 0.05  # digits are 8x8 in [0, 1]; at this radius some points are robust, some are not
SHORT = {"apgd-ce": {"steps": 10}, "apgd-t": {"steps": 10, "targets": 2}, "square": {"queries": 100}}


@pytest.fixture(scope="module")
def digits64(digits_model):
    """The digits CNN and 64 test images it classifies correctly."""
    model, x, y = digits_model
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    return model, x[ok][:64], y[ok][:64]


class Counting(nn.Module):
    """Records the batch size of every call (how much work an attack sends to the model)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.sizes: list[int] = []
        self.inputs: list[torch.Tensor] = []
        self.keep_inputs = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        if self.keep_inputs:
            self.inputs.append(x.detach().clone())
        return self.model(x)


# ---- APGD against a plain statement of its schedule ------------------------------------------------------------


def reference_checkpoints(steps: int) -> list[int]:
    """The reference's counters, literally: check when counter3 == k, then k = max(k - size_decr, n_iter_min)."""
    k, size_decr, n_iter_min = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    found, counter3 = [], 0
    for i in range(steps):
        counter3 += 1
        if counter3 == k:
            found.append(i)
            k, counter3 = max(k - size_decr, n_iter_min), 0
    return found


@pytest.mark.parametrize("steps", [1, 2, 10, 37, 100, 250])
def test_checkpoints_follow_the_reference_counters(steps) -> None:
    assert checkpoints(steps) == reference_checkpoints(steps)
    if steps == 100:
        assert checkpoints(100) == [21, 40, 56, 69, 79, 86, 92, 98]


def plain_apgd(model, x, y, eps, steps, loss_fn, generator, rho=0.75):
    """APGD on the whole batch, no compaction, the eager update of the reference code, the loss history kept in
    full: returns per sample the first misclassified iterate (or the best point), whether it was fooled, and the
    step size after each checkpoint."""
    n = x.shape[0]
    t = 2 * torch.rand(x.shape, generator=generator) - 1  # float32, as the reference draws it
    x_adv = (x + (eps * torch.ones_like(t)) * (t / (t.abs().flatten(1).amax(1).view(-1, 1, 1, 1) + 1e-12))).clamp(0, 1)

    def evaluate(point):
        point = point.detach().requires_grad_(True)
        logits = model(point)
        losses = loss_fn(logits)
        (grad,) = torch.autograd.grad(losses.sum(), point)
        return logits.detach(), losses.detach(), grad

    logits, loss, grad = evaluate(x_adv)
    fooled = logits.argmax(1) != y
    first = torch.where(fooled.view(-1, 1, 1, 1), x_adv, x)
    x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), loss.clone()
    history = torch.zeros(steps, n, dtype=loss.dtype)
    eta = torch.full((n, 1, 1, 1), 2 * eps, dtype=x.dtype)
    x_prev, k, counter, at_check = x_adv.clone(), max(int(0.22 * steps), 1), 0, loss_best.clone()
    reduced = torch.ones(n, dtype=torch.bool)
    etas = []
    for i in range(steps):
        a = 1.0 if i == 0 else 0.75
        z = torch.clamp(torch.min(torch.max(x_adv + eta * torch.sign(grad), x - eps), x + eps), 0, 1)
        new = x_adv + (z - x_adv) * a + (x_adv - x_prev) * (1 - a)
        x_prev, x_adv = x_adv, torch.clamp(torch.min(torch.max(new, x - eps), x + eps), 0, 1)
        logits, loss, grad = evaluate(x_adv)
        hit = (logits.argmax(1) != y) & ~fooled
        first[hit], fooled = x_adv[hit], fooled | hit
        history[i] = loss
        better = loss > loss_best
        x_best[better], grad_best[better], loss_best[better] = x_adv[better], grad[better], loss[better]
        counter += 1
        if counter == k:
            rises = sum((history[i - c] > history[i - c - 1]).long() for c in range(k))  # index -1: the quirk
            halve = (rises <= k * rho) | (~reduced & (at_check >= loss_best))
            reduced, at_check = halve, loss_best.clone()
            eta[halve] /= 2
            x_adv[halve], grad[halve] = x_best[halve], grad_best[halve]
            etas.append(eta.flatten().clone())
            k, counter = max(k - max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)), 0
    return torch.where(fooled.view(-1, 1, 1, 1), first, x_best), fooled, etas


def test_apgd_equals_the_plain_statement(digits64) -> None:
    """In float64 (so that compaction's other batch shapes cannot flip a gradient sign), advfast's APGD-CE and
    the plain statement give the same point for every sample: the schedule (checkpoints, halving, restarts from
    the best point) and the compaction change nothing."""
    model, x, y = digits64
    model64, x64, y = copy.deepcopy(model).double(), x[:32].double(), y[:32]
    steps = 22

    def ce(logits):
        return F.cross_entropy(logits.float(), y, reduction="none")

    expected, fooled, etas = plain_apgd(model64, x64, y, EPS, steps, ce, torch.Generator().manual_seed(3))
    got = apgd(model64, x64, y, eps=EPS, steps=steps, generator=torch.Generator().manual_seed(3))
    assert 0 < int(fooled.sum()) < len(y), "the radius should leave some samples robust and break others"
    halved = torch.stack(etas) < 2 * EPS
    assert bool(halved.any()) and not bool(halved.all()), "some samples must halve their step, some not"
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_apgd_targeted_equals_the_plain_statement(digits64) -> None:
    model, x, y = digits64
    model64, x64, y = copy.deepcopy(model).double(), x[:32].double(), y[:32]
    steps, targets = 8, 2
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        ranked = model64(x64).sort(dim=1).indices
    expected, fooled = x64.clone(), torch.zeros(len(y), dtype=torch.bool)
    for k in range(2, targets + 2):
        todo = (~fooled).nonzero().squeeze(1)
        target = ranked[todo, -k]

        def loss(logits, target=target, todo=todo):
            return dlr_targeted(logits, y[todo], target)

        point, hit, _ = plain_apgd(model64, x64[todo], y[todo], EPS, steps, loss, generator)
        expected[todo] = point
        fooled[todo] |= hit
    got = apgd_targeted(
        model64, x64, y, eps=EPS, steps=steps, targets=targets, generator=torch.Generator().manual_seed(5)
    )
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


# ---- compaction -----------------------------------------------------------------------------------------------


def test_apgd_compacts_broken_points(digits64) -> None:
    """A broken point leaves at the step that broke it and never comes back: batch sizes only fall within a run,
    every output of a broken point is misclassified, and the work is below what the uncompacted loop does."""
    model, x, y = digits64
    counting = Counting(model)
    x_adv = apgd(counting, x, y, eps=2 * EPS, steps=20, generator=torch.Generator().manual_seed(0))
    sizes = counting.sizes[1:]  # after the clean forward
    assert all(later <= earlier for earlier, later in itertools.pairwise(sizes))
    with torch.no_grad():
        broken = model(x_adv).argmax(1) != y
    assert 0 < int(broken.sum()) < len(y)
    assert sizes[-1] >= len(y) - int(broken.sum()), "the points never broken stay to the end"
    assert sum(sizes) < 21 * len(y), f"compaction should cut the work, used {sum(sizes)} of {21 * len(y)}"


def test_autoattack_compacts_across_stages(digits64) -> None:
    model, x, y = digits64
    result = autoattack(
        model, x, y, eps=EPS, attacks=["apgd-ce", "square"], settings={"square": {"queries": 300}}, batch_size=16
    )
    # Each stage attacks exactly the points the earlier ones left robust.
    assert result.points["apgd-ce"] == round(result.accuracy["clean"] * len(y))
    assert result.points["square"] == round(result.accuracy["apgd-ce"] * len(y))
    assert result.accuracy["square"] <= result.accuracy["apgd-ce"] <= result.accuracy["clean"]
    assert torch.equal(result.robust, result.broken_by == -1)
    with torch.no_grad():
        predicted = model(result.x_adv).argmax(1)
    assert torch.equal(predicted == y, result.robust), "x_adv is the worst case per point"


# ---- Square ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_queries_stay_in_the_ball_and_bounds(digits64, norm) -> None:
    model, x, y = digits64
    x, y = x[:16], y[:16]
    eps = EPS if norm == "linf" else 0.5
    counting = Counting(model)
    counting.keep_inputs = True
    x_adv = square(counting, x, y, eps=eps, norm=norm, queries=100, generator=torch.Generator().manual_seed(0))
    queried = torch.cat(counting.inputs[1:])  # after the clean forward
    assert queried.min() >= 0 and queried.max() <= 1
    # Every query lies within eps of one of the clean images (the batch is compacted, so rows move).
    flat, clean = queried.flatten(1), x.flatten(1)
    distance = torch.cdist(flat, clean, p=math.inf if norm == "linf" else 2).amin(dim=1)
    # L-inf is exact; L2 rescales to norm eps in float32, as the reference does: within its rounding.
    slack = 1e-6 if norm == "linf" else 1e-4
    assert float(distance.max()) <= eps * (1 + slack)
    norms = (x_adv - x).flatten(1).norm(p=math.inf if norm == "linf" else 2, dim=1)
    assert float(norms.max()) <= eps * (1 + slack)


def test_square_only_ever_lowers_the_margin(digits64) -> None:
    """With the same seed a longer search extends a shorter one, so each point's margin never rises with the
    query budget."""
    model, x, y = digits64
    x, y = x[:32], y[:32]
    margins = []
    for queries in (10, 40, 160):
        x_adv = square(model, x, y, eps=EPS, queries=queries, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            margins.append(margin(model(x_adv), y))
    assert bool((margins[1] <= margins[0] + 1e-6).all()) and bool((margins[2] <= margins[1] + 1e-6).all())
    assert bool((margins[2] < margins[0]).any()), "the search should improve something"


def test_p_schedule_is_the_reference_one() -> None:
    assert [p_schedule(i) for i in (0, 10, 11, 50, 51, 200, 201, 4000, 4001, 6001, 8001)] == [
        0.8, 0.8, 0.4, 0.4, 0.2, 0.2, 0.1, 0.8 / 64, 0.8 / 128, 0.8 / 256, 0.8 / 512,
    ]  # fmt: skip


# ---- the ensemble ---------------------------------------------------------------------------------------------


def test_autoattack_is_the_worst_case_of_its_attacks(digits64) -> None:
    """The ensemble (here with short stages) against each of its attacks alone, same seed and batch: its first
    stage is APGD-CE alone, point for point; every later stage only removes points, so it is never more accurate
    than any of its attacks alone; and its stages' accuracies fall in order."""
    model, x, y = digits64
    small = {"apgd-ce": {"steps": 20}, "apgd-t": {"steps": 10, "targets": 2}, "square": {"queries": 150}}
    stages = [(get_attack(name), get_attack(name).settings(small[name])) for name in small]
    ensemble = run_ensemble(
        model, x, y, stages, eps=EPS, norm="linf", bounds=(0.0, 1.0), seed=0, batch_size=64, device=torch.device("cpu")
    )
    alone = evaluate_robustness(
        model, (x, y), eps=[EPS], attacks=list(small), settings=small, sanity=False, progress=False, batch_size=64
    )
    assert torch.equal(ensemble.broken_by == 1, ~alone.correct("apgd-ce", 0))
    for attack in small:
        assert ensemble.accuracy["square"] <= alone.accuracy[attack][0], attack
        assert bool((ensemble.robust <= alone.correct(attack, 0)).float().mean() >= 0.9), attack
    after = [ensemble.accuracy[name] for name in ensemble.stages]
    assert after == sorted(after, reverse=True) and after[-1] < after[0]


# ---- the registry ---------------------------------------------------------------------------------------------


def test_registry_specs_are_complete_and_settings_checked() -> None:
    assert list(ATTACKS) == ["fgsm", "pgd", "apgd-ce", "apgd-t", "square", "autoattack"]
    for name, spec in ATTACKS.items():
        assert spec.name == name and get_attack(name) is spec
        settings = spec.settings()
        assert isinstance(spec.label(settings), str) and spec.cost(settings) >= 1
    assert get_attack("pgd").label(get_attack("pgd").settings({"steps": 10, "restarts": 3})) == "PGD-10 x3"
    assert get_attack("autoattack").cost(get_attack("autoattack").settings()) == 101 + 909 + 5001
    with pytest.raises(ValueError, match="attack must be one of"):
        get_attack("fab-t")
    with pytest.raises(ValueError, match="steps"):
        get_attack("apgd-ce").settings({"steps": 0})
    with pytest.raises(ValueError, match="unknown"):
        get_attack("square").settings({"steps": 10})


@pytest.mark.slow
def test_every_registered_attack_runs_through_the_evaluation(digits64) -> None:
    model, x, y = digits64
    small = {"apgd-ce": {"steps": 5}, "apgd-t": {"steps": 5, "targets": 2}, "square": {"queries": 30},
             "autoattack": {"stages": ("apgd-ce", "square")}}  # fmt: skip
    x, y = x[:12], y[:12]
    result = evaluate_robustness(
        model, (x, y), eps=[EPS], attacks=list(ATTACKS), settings=small, pgd_steps=5, progress=False,
    )  # fmt: skip
    assert result.attacks == list(ATTACKS)
    assert result.settings["square"] == {"queries": 30, "p_init": 0.8}
    assert result.settings["autoattack"] == {"stages": ("apgd-ce", "square")}
    assert result.stages["autoattack"].stages == ["clean", "apgd-ce", "square"]
    after = result.stages["autoattack"].accuracy[0]
    assert after["clean"] >= after["apgd-ce"] >= after["square"] == result.accuracy["autoattack"][0]
    assert "gradient_free_not_stronger" in result.sanity_checks
    for attack in ATTACKS:
        assert 0.0 <= result.accuracy[attack][0] <= result.clean_accuracy
    assert result.to_dict()["settings"]["autoattack"] == {"stages": ["apgd-ce", "square"]}


# ---- the caller's model and data ------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", ["apgd", "apgd_targeted", "square", "autoattack"])
def test_model_and_inputs_left_as_they_were(digits64, attack) -> None:
    model, x, y = digits64
    model = copy.deepcopy(model).train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    flags = [p.requires_grad for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    x_before = x.clone()
    x, y = x[:8], y[:8]
    calls = {
        "apgd": lambda: apgd(model, x, y, eps=EPS, steps=3),
        "apgd_targeted": lambda: apgd_targeted(model, x, y, eps=EPS, steps=3, targets=2),
        "square": lambda: square(model, x, y, eps=EPS, queries=5),
        "autoattack": lambda: autoattack(model, x, y, eps=EPS, settings=SHORT),
    }
    calls[attack]()
    assert all(m.training for m in model.modules())
    assert all(torch.equal(b, saved) for b, saved in zip(model.buffers(), buffers, strict=True))
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert torch.equal(x_before[:8], x)


# ---- bad arguments --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda m, x, y: apgd(m, x, y, eps=-0.1), "eps"),
        (lambda m, x, y: apgd(m, x, y, eps=0.1, steps=0), "steps"),
        (lambda m, x, y: apgd(m, x, y, eps=0.1, loss="cw"), "loss"),
        (lambda m, x, y: apgd(m, x, y, eps=0.1, rho=1.5), "rho"),
        (lambda m, x, y: apgd(m, x, y, eps=0.1, norm="l1"), "norm"),
        (lambda m, x, y: apgd_targeted(m, x, y, eps=0.1, targets=10), "targets"),
        (lambda m, x, y: square(m, x.flatten(1), y, eps=0.1), "x"),
        (lambda m, x, y: square(m, x, y, eps=0.1, queries=0), "queries"),
        (lambda m, x, y: square(m, x, y, eps=0.1, p_init=2.0), "p_init"),
        (lambda m, x, y: autoattack(m, x, y, eps=float("nan")), "eps"),
        (lambda m, x, y: autoattack(m, x, y, eps=0.1, attacks=["fab-t"]), "attack"),
        (lambda m, x, y: autoattack(m, x, y, eps=0.1, batch_size=0), "batch_size"),
        (lambda m, x, y: autoattack(m, x, y, eps=0.1, settings={"fab-t": {}}), "settings"),
        (lambda m, x, y: autoattack(m, x, y[:-1], eps=0.1), "y"),
    ],
)
def test_bad_arguments_name_the_argument(digits64, call, name) -> None:
    model, x, y = digits64
    with pytest.raises((ValueError, TypeError), match=name):
        call(model, x[:4], y[:4])


# ---- the command line -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from advfast.cli import main

    out = tmp_path_factory.mktemp("run") / "digits"
    code = main(["train", "--data", "digits", "--method", "standard", "--epochs", "2", "--no-report",
                 "--no-progress", "--out", str(out)])  # fmt: skip
    assert code == 0
    return out


def test_cli_eval_and_attack_take_attack_names(digits_run, tmp_path, capsys) -> None:
    from advfast.cli import main

    code = main(["eval", str(digits_run), "--eps", "0.05", "--attack", "fgsm", "pgd", "--steps", "5",
                 "--no-sanity", "--no-progress", "--out", str(tmp_path / "eval")])  # fmt: skip
    assert code == 0
    import json

    report = json.loads((tmp_path / "eval" / "report.json").read_text())["result"]
    assert report["attacks"] == ["fgsm", "pgd"] and report["settings"]["pgd"]["steps"] == 5
    assert "PGD-5" in (tmp_path / "eval" / "report.md").read_text()
    code = main(["attack", str(digits_run), "--eps", "0.05", "--attack", "apgd-ce", "fgsm", "--limit", "20",
                 "--out", str(tmp_path / "adv.npz")])  # fmt: skip
    assert code == 0
    saved = np.load(tmp_path / "adv.npz")
    assert list(saved["attacks"]) == ["apgd-ce", "fgsm"] and saved["x"].shape == saved["x_clean"].shape
    assert set(np.unique(saved["broken_by"])) <= {-2, -1, 0, 1}
    assert np.abs(saved["x"] - saved["x_clean"]).max() <= 0.05 + 1e-6
    assert "robust accuracy after APGD-CE" in capsys.readouterr().out


def test_cli_refuses_an_unknown_attack(digits_run, capsys) -> None:
    from advfast.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(digits_run), "--attack", "fab-t"])
    assert exit_info.value.code == 2
    assert "--attack" in capsys.readouterr().err
