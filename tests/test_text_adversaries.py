"""Each adversary against a plain-PyTorch statement of its formula, written here from the method's reference
code: same perturbation trajectory (``trace``) and same accumulated parameter gradients, to 1e-6 in float32.
Tiny random BERT (eval mode, so no dropout) on a batch with padding and special tokens."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from text_support import (
    SPECIAL,
    assert_grads_close,
    movable,
    one_thread,  # noqa: F401  (autouse: one intra-op thread)
    tiny_bert,
    tiny_gpt2,
    token_batch,
    twin,
)
from torch import Tensor

import advfast.text as text

ATOL = 1e-6


@pytest.fixture(scope="module")
def base_model():
    return tiny_bert()


@pytest.fixture
def models(base_model):
    """(model for advfast, twin for the reference), identical weights, no gradients."""
    return twin(base_model), twin(base_model)


def logits_at(model, batch, inputs_embeds: Tensor) -> Tensor:
    return model(inputs_embeds=inputs_embeds, attention_mask=batch["attention_mask"]).logits


def ce(model, batch, inputs_embeds: Tensor) -> Tensor:
    return F.cross_entropy(logits_at(model, batch, inputs_embeds), batch["labels"])


def sequence_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1).view(-1, 1, 1)


def assert_trace(actual: list[Tensor], expected: list[Tensor]) -> None:
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        torch.testing.assert_close(a, e, atol=ATOL, rtol=1e-5, msg=lambda m, i=i: f"pass {i}: {m}")


# ---- FreeLB: the reference's run_glue_freelb.py loop (and the fairseq task's K+1 passes) ------------------


def freelb_reference(model, batch, *, eps, alpha, steps, init_mag, norm, passes, seed) -> list[Tensor]:
    embed = model.get_input_embeddings()
    m = movable(batch).unsqueeze(-1).float()
    e0 = embed(batch["input_ids"])
    if init_mag > 0:
        u = torch.empty_like(e0).uniform_(-1, 1, generator=torch.Generator().manual_seed(seed))
        if norm == "l2":
            dims = batch["attention_mask"].sum(1).float() * e0.shape[-1]
            delta = u * m * (init_mag / torch.sqrt(dims)).view(-1, 1, 1)
        else:
            delta = u * m * init_mag
    else:
        delta = torch.zeros_like(e0)
    delta = delta.detach()
    trace = []
    for t in range(passes):
        delta.requires_grad_()
        trace.append(delta.detach().clone())
        loss = ce(model, batch, embed(batch["input_ids"]) + delta) / passes
        loss.backward()
        if t == passes - 1:
            break
        g = delta.grad.detach() * m
        if norm == "l2":
            delta = (delta + alpha * g / sequence_norm(g).clamp(min=1e-8)).detach()
            if eps is not None:
                n = sequence_norm(delta)
                delta = (delta * torch.where(n > eps, eps / n, torch.ones_like(n))).detach()
        else:
            scale = g.flatten(1).abs().amax(dim=1).clamp(min=1e-8).view(-1, 1, 1)
            delta = (delta + alpha * g / scale).detach()
            if eps is not None:
                delta = delta.clamp(-eps, eps).detach()
    return trace


@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("init_mag", [0.0, 0.8])
@pytest.mark.parametrize("eps", [None, 0.05])
def test_freelb_matches_reference(models, steps, norm, init_mag, eps):
    ours, ref = models
    batch = token_batch()
    alpha = 0.1 if norm == "l2" else 0.02
    adversary = text.FreeLB(
        ours, eps=eps, alpha=alpha, steps=steps, init_mag=init_mag, norm=norm,
        special_token_ids=SPECIAL, generator=torch.Generator().manual_seed(7),
    )  # fmt: skip
    trace: list[Tensor] = []
    value = adversary.loss(batch, trace=trace)
    expected = freelb_reference(
        ref, batch, eps=eps, alpha=alpha, steps=steps, init_mag=init_mag, norm=norm, passes=steps, seed=7
    )
    assert_trace(trace, expected)
    assert_grads_close(ours, ref)
    assert ours.get_input_embeddings().weight.grad is not None  # FreeLB trains the table through every pass
    assert math.isfinite(value.item())
    if eps is not None and norm == "l2" and steps > 1:
        assert sequence_norm(trace[-1]).max() <= eps * (1 + 1e-5)


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("init_mag", [0.0, 0.8])
def test_freelb_fairseq_variant_runs_k_plus_one_passes(models, norm, init_mag):
    ours, ref = models
    batch = token_batch()
    adversary = text.FreeLB(
        ours, eps=0.3, alpha=0.1, steps=2, init_mag=init_mag, norm=norm, variant="fairseq",
        special_token_ids=SPECIAL, generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    trace: list[Tensor] = []
    adversary.loss(batch, trace=trace)
    expected = freelb_reference(ref, batch, eps=0.3, alpha=0.1, steps=2, init_mag=init_mag, norm=norm, passes=3, seed=3)
    assert len(trace) == 3
    if init_mag == 0:
        assert not trace[0].any()  # the first pass is the clean input
    assert_trace(trace, expected)
    assert_grads_close(ours, ref)


# ---- FGM --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("include_clean", [True, False])
def test_fgm_matches_formula(models, norm, include_clean):
    ours, ref = models
    batch = token_batch()
    eps = 0.5
    trace: list[Tensor] = []
    text.FGM(ours, eps=eps, norm=norm, include_clean=include_clean, special_token_ids=SPECIAL).loss(batch, trace=trace)

    embed = ref.get_input_embeddings()
    m = movable(batch).unsqueeze(-1).float()
    e = embed(batch["input_ids"])
    probe = torch.zeros_like(e, requires_grad=True)
    clean = ce(ref, batch, (e if include_clean else e.detach()) + probe)
    if include_clean:
        clean.backward()
        g = probe.grad * m
    else:
        (g,) = torch.autograd.grad(clean, probe)
        g = g * m
    r = eps * g / sequence_norm(g) if norm == "l2" else eps * torch.sign(g)
    ce(ref, batch, embed(batch["input_ids"]) + r).backward()

    assert_trace(trace, [torch.zeros_like(r), r])
    assert_grads_close(ours, ref)


# ---- PGD ---------------------------------------------------------------------------------------------------


def pgd_reference(model, batch, *, eps, alpha, steps, norm, include_clean, start: Tensor) -> list[Tensor]:
    embed = model.get_input_embeddings()
    m = movable(batch).unsqueeze(-1).float()
    trace = []
    if include_clean:
        trace.append(torch.zeros_like(start))
        ce(model, batch, embed(batch["input_ids"])).backward()
    e = embed(batch["input_ids"]).detach()
    delta = start.clone()
    for _ in range(steps):
        point = delta.clone().requires_grad_()
        trace.append(point.detach().clone())
        loss = F.cross_entropy(logits_at(model, batch, e + point), batch["labels"], reduction="sum")
        (g,) = torch.autograd.grad(loss, point)
        g = g * m
        if norm == "l2":
            d = delta + alpha * g / sequence_norm(g)
            n = sequence_norm(d)
            delta = d * torch.where(n > eps, eps / n, torch.ones_like(n))
        else:
            delta = (delta + alpha * torch.sign(g)).clamp(-eps, eps)
    trace.append(delta.clone())
    ce(model, batch, embed(batch["input_ids"]) + delta).backward()
    return trace


@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_pgd_matches_formula(models, steps, norm):
    ours, ref = models
    batch = token_batch()
    eps, alpha = (0.6, 0.25) if norm == "l2" else (0.02, 0.008)
    trace: list[Tensor] = []
    text.PGD(ours, eps=eps, alpha=alpha, steps=steps, norm=norm, random_start=False, special_token_ids=SPECIAL).loss(
        batch, trace=trace
    )
    start = torch.zeros(*batch["input_ids"].shape, 32)
    expected = pgd_reference(ref, batch, eps=eps, alpha=alpha, steps=steps, norm=norm, include_clean=False, start=start)
    assert_trace(trace, expected)
    assert_grads_close(ours, ref)  # only the final pass trains: the ascent left no parameter gradient


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_with_clean_loss_and_random_start(models, random_start):
    ours, ref = models
    batch = token_batch()
    trace: list[Tensor] = []
    adversary = text.PGD(
        ours, eps=0.6, alpha=0.25, steps=2, include_clean=True, random_start=random_start,
        special_token_ids=SPECIAL, generator=torch.Generator().manual_seed(5),
    )  # fmt: skip
    adversary.loss(batch, trace=trace)
    shape = (*batch["input_ids"].shape, 32)
    if random_start:
        # The start the docstring states: z ~ N(0, I) on movable entries, radius eps * U^(1/n) per sequence.
        g = torch.Generator().manual_seed(5)
        mv = movable(batch).unsqueeze(-1).float()
        z = torch.empty(shape).normal_(generator=g) * mv
        u = torch.rand(shape[0], generator=g)
        n = movable(batch).sum(1).float() * shape[-1]
        start = z * (0.6 * u.pow(1 / n)).view(-1, 1, 1) / sequence_norm(z)
    else:
        start = torch.zeros(shape)
    expected = pgd_reference(ref, batch, eps=0.6, alpha=0.25, steps=2, norm="l2", include_clean=True, start=start)
    if not random_start:
        # The clean backward gave the first step's gradient: one ascent pass fewer, same trajectory.
        expected = [expected[0], *expected[2:]]
    assert_trace(trace, expected)
    assert_grads_close(ours, ref)


# ---- SMART: mt-dnn's SmartPerturbation, stable_kl and SymKlCriterion ----------------------------------------


def stable_kl_reference(logit: Tensor, target: Tensor, epsilon: float = 1e-6) -> Tensor:
    p = F.log_softmax(logit.float(), 1).exp()
    y = F.log_softmax(target.float(), 1).exp()
    rp = -(1.0 / (p + epsilon) - 1 + epsilon).detach().log()
    ry = -(1.0 / (y + epsilon) - 1 + epsilon).detach().log()
    return (p * (rp - ry) * 2).sum()


def sym_kl_reference(inp: Tensor, target: Tensor) -> Tensor:
    return F.kl_div(F.log_softmax(inp, -1), F.softmax(target.detach(), -1), reduction="batchmean") + F.kl_div(
        F.log_softmax(target, -1), F.softmax(inp.detach(), -1), reduction="batchmean"
    )


@pytest.mark.parametrize("projection", ["sphere", "ball"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("steps", [1, 2])
def test_smart_matches_reference(models, projection, norm, steps):
    ours, ref = models
    batch = token_batch()
    eps, alpha, sigma, weight = 0.05, 1e-3 if projection == "sphere" else 0.02, 1e-3, 1.5
    trace: list[Tensor] = []
    text.SMART(
        ours, eps=eps, alpha=alpha, steps=steps, noise_std=sigma, norm=norm, projection=projection, weight=weight,
        special_token_ids=SPECIAL, generator=torch.Generator().manual_seed(11),
    ).loss(batch, trace=trace)  # fmt: skip

    embed = ref.get_input_embeddings()
    m = movable(batch).unsqueeze(-1).float()
    e = embed(batch["input_ids"])
    logits = logits_at(ref, batch, e)
    noise = torch.empty_like(e).normal_(generator=torch.Generator().manual_seed(11)) * sigma * m
    expected = [torch.zeros_like(e)]
    for _ in range(steps):
        noise = noise.detach().requires_grad_()
        expected.append(noise.detach().clone())
        adv_loss = stable_kl_reference(logits_at(ref, batch, e + noise), logits.detach())
        (g,) = torch.autograd.grad(adv_loss, noise, retain_graph=True)
        g = g * m
        if projection == "sphere":
            s = noise + g * alpha
            size = s.norm(dim=-1, keepdim=True) if norm == "l2" else s.abs().max(-1, keepdim=True)[0]
            noise = eps * s / (size + 1e-6)
        elif norm == "l2":
            d = noise + alpha * g / (g.norm(dim=-1, keepdim=True) + 1e-12)
            n = d.norm(dim=-1, keepdim=True)
            noise = d * torch.where(n > eps, eps / n, torch.ones_like(n))
        else:
            d = noise + alpha * g / g.abs().amax(dim=-1, keepdim=True).clamp(min=1e-8)
            noise = d.clamp(-eps, eps)
    noise = noise.detach()
    expected.append(noise)
    adv_logits = logits_at(ref, batch, e + noise)
    loss = F.cross_entropy(logits, batch["labels"]) + weight * sym_kl_reference(logits, adv_logits)
    loss.backward()

    assert_trace(trace, expected)
    assert_grads_close(ours, ref)
    if projection == "sphere":  # every movable token sits on the eps-sphere, up to the reference's 1e-6
        size = trace[-1].norm(dim=-1) if norm == "l2" else trace[-1].abs().amax(dim=-1)
        size = size[movable(batch)]
        assert (size <= eps * (1 + 1e-6)).all() and (size >= 0.99 * eps).all()


# ---- R3F: fairseq's sentence_prediction_r3f ---------------------------------------------------------------


@pytest.mark.parametrize("noise", ["uniform", "normal"])
def test_r3f_matches_fairseq(models, noise):
    ours, ref = models
    batch = token_batch()
    eps, lam = 1e-2, 0.7
    trace: list[Tensor] = []
    text.R3F(
        ours, eps=eps, noise=noise, weight=lam, special_token_ids=SPECIAL, generator=torch.Generator().manual_seed(2)
    ).loss(batch, trace=trace)

    embed = ref.get_input_embeddings()
    token_embeddings = embed(batch["input_ids"])
    input_logits = logits_at(ref, batch, token_embeddings)
    g = torch.Generator().manual_seed(2)
    n = torch.empty_like(token_embeddings)
    n = n.uniform_(-eps, eps, generator=g) if noise == "uniform" else n.normal_(0, eps, generator=g)
    n = n * movable(batch).unsqueeze(-1).float()
    noised_logits = logits_at(ref, batch, token_embeddings.detach().clone() + n)
    symm_kl = (
        F.kl_div(F.log_softmax(noised_logits, -1), F.softmax(input_logits, -1), reduction="sum")
        + F.kl_div(F.log_softmax(input_logits, -1), F.softmax(noised_logits, -1), reduction="sum")
    ) / noised_logits.size(0)
    (F.cross_entropy(input_logits, batch["labels"]) + lam * symm_kl).backward()

    assert_trace(trace, [torch.zeros_like(n), n])
    assert_grads_close(ours, ref)


# ---- shared behaviour ----------------------------------------------------------------------------------------

ALL = {
    "fgm": {"eps": 0.5},
    "pgd": {"eps": 0.5, "steps": 2},
    "freelb": {"eps": 0.3, "steps": 2, "init_mag": 0.5},
    "smart": {"eps": 0.05, "steps": 2},
    "r3f": {"eps": 1e-2},
}


@pytest.mark.parametrize("method", sorted(ALL))
@pytest.mark.parametrize("source", ["ids", "mask"])
def test_padding_and_special_tokens_never_move(base_model, method, source):
    """Frozen tokens are 0 in every perturbation fed to the model, whether the special tokens come from the
    ids given or from the batch's special_tokens_mask."""
    model = twin(base_model).train()
    batch = token_batch()
    frozen = ~movable(batch)
    if source == "mask":
        batch["special_tokens_mask"] = torch.isin(batch["input_ids"], torch.tensor(SPECIAL)).long()
        kwargs = {"special_token_ids": ()}
    else:
        kwargs = {"special_token_ids": SPECIAL}
    trace: list[Tensor] = []
    text.make_adversary(method, model, generator=torch.Generator().manual_seed(0), **ALL[method], **kwargs).loss(
        batch, trace=trace
    )
    assert len(trace) >= 2
    assert any(d[~frozen].abs().sum() > 0 for d in trace)  # something moved
    for d in trace:
        assert not d[frozen].any()


@pytest.mark.parametrize("method", sorted(ALL))
def test_decoder_only_classifier_through_the_same_path(method):
    """GPT-2 (left-padded, position ids from the attention mask): the clean logits from embeddings equal the
    unpadded ones, and every adversary trains it without moving padding."""
    model = tiny_gpt2()
    batch = token_batch(left=True)
    adversary = text.make_adversary(method, model, special_token_ids=SPECIAL, **ALL[method])
    prepared = adversary.prepare(batch)
    with torch.no_grad():
        padded = adversary.logits(prepared, adversary.embed(prepared))
        for row, n in enumerate((9, 5, 7, 3)):
            alone = model(input_ids=batch["input_ids"][row : row + 1, -n:]).logits
            torch.testing.assert_close(padded[row : row + 1], alone, atol=1e-5, rtol=1e-4)
    trace: list[Tensor] = []
    value = adversary.loss(batch, trace=trace)
    assert math.isfinite(value.item())
    assert all(not d[~movable(batch)].any() for d in trace)
    assert model.get_input_embeddings().weight.grad is not None


def test_same_dropout_replays_masks_across_passes(base_model):
    """In training mode with dropout, same_dropout makes every FreeLB pass see the same masks: with alpha
    tiny and no init the passes' logits coincide; without it they differ."""
    model = tiny_bert(dropout=0.3).train()
    batch = token_batch()

    def pass_logits(same: bool) -> list[Tensor]:
        seen: list[Tensor] = []
        adversary = text.FreeLB(model, eps=None, alpha=1e-9, steps=3, init_mag=0.0, same_dropout=same)
        original = adversary.classifier.logits

        def spy(b, e):
            out = original(b, e)
            seen.append(out.detach().clone())
            return out

        adversary.classifier.logits = spy  # instance attribute: the model itself is untouched
        adversary.loss(batch)
        model.zero_grad(set_to_none=True)
        return seen

    same = pass_logits(True)
    torch.testing.assert_close(same[0], same[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(same[0], same[2], atol=1e-6, rtol=0)
    differ = pass_logits(False)
    assert (differ[0] - differ[1]).abs().max() > 1e-3
