"""The embedding attack's step against a plain-PyTorch loop of the kind reference code runs, side by side in
one run, on the same model, prompts, targets and step count.

- reference (the loop of Schwinn et al.'s released attack, and of CAT's): prompts one at a time (batch 1);
  embeddings as ``one_hot @ W`` over the whole vocabulary; the weights left trainable, so ``loss.backward()``
  also computes every weight gradient (then ``model.zero_grad()``); the update in eager ops.
- advfast (:class:`advfast.llm.EmbeddingAttack`): all prompts in one left-padded batch; a gather; weights
  frozen, input gradients only (``torch.autograd.grad``); the columns before the first movable token through
  the model once (a KV cache); logits for the target positions only; one fused ``l2_step_`` on the
  ``[B*L, D]`` token view.

Both run the same number of steps per prompt with early stopping off, so the work is the same; the figure is
prompt-steps per second, and the ratio is advfast's over the reference's. The fused op's share of advfast's
step is timed around each call. Default model: SmolLM2-135M-Instruct (``--model`` takes any registered name
or local folder; ``--random-llama`` a mid-size random Llama instead). Run from the repository root::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_llm.py --prompts 8 --steps 3
    .venv/bin/pytest benchmarks/bench_llm.py          # a short run on a small random Llama
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import advfast
from advfast.llm import EmbeddingAttack, load_task
from advfast.llm.chat import encode_prompt, encode_text


def reference_attack(
    model: Any, tokenizer: Any, prompts: list, targets: list[str], *, steps: int, alpha: float
) -> None:
    """One prompt at a time: ``one_hot @ W``, ``loss.backward()`` with trainable weights, a signed step."""
    weight = model.get_input_embeddings().weight
    for messages, target in zip(prompts, targets, strict=True):
        parts = encode_prompt(tokenizer, messages)
        before = torch.tensor([*parts.before])
        user = torch.tensor([*parts.user])
        after = torch.tensor([*parts.after, *encode_text(tokenizer, target)])
        target_ids = torch.tensor(encode_text(tokenizer, target))

        def one_hot_embed(ids: torch.Tensor) -> torch.Tensor:
            one_hot = torch.zeros(len(ids), weight.shape[0], dtype=weight.dtype)
            one_hot.scatter_(1, ids[:, None], 1.0)
            return (one_hot @ weight)[None]

        fixed_before, fixed_after = one_hot_embed(before).detach(), one_hot_embed(after).detach()
        clean = one_hot_embed(user).detach()
        delta = torch.zeros_like(clean, requires_grad=True)
        for _ in range(steps):
            embeds = torch.hstack([fixed_before, clean + delta, fixed_after])
            logits = model(inputs_embeds=embeds).logits
            n = len(target_ids)
            loss = F.cross_entropy(logits[0, -n - 1 : -1], target_ids)
            loss.backward()
            with torch.no_grad():
                delta -= alpha * delta.grad.sign()
            model.zero_grad()
            delta.grad.zero_()


class _TimedOp:
    """Wraps a fused op to add up the seconds spent in it."""

    def __init__(self, op: Any) -> None:
        self.op, self.seconds, self.calls = op, 0.0, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = self.op(*args, **kwargs)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def compare(model: Any, tokenizer: Any, *, prompts: int, steps: int, repeats: int = 1) -> dict[str, Any]:
    task = load_task("secret", seed=0)
    examples = task.test[:prompts]
    messages, targets = [e.messages for e in examples], [e.target for e in examples]
    attack = EmbeddingAttack(
        model, tokenizer, eps=0.05, steps=steps, early_stop=False, batch_size=prompts, max_new_tokens=1
    )
    # Correctness first: both loops lower the target's loss on this model.
    checked = attack.run(messages[:1], targets[:1])
    assert checked.losses[-1, 0] <= checked.losses[0, 0] + 1e-4, "the attack did not lower the target's loss"
    timed = _TimedOp(advfast.ops.l2_step_)
    original = advfast.ops.l2_step_
    results: dict[str, list[float]] = {"advfast": [], "reference": []}
    for _ in range(repeats):  # interleaved, so load changes on a shared machine hit both alike
        advfast.ops.l2_step_ = timed
        try:
            t0 = time.perf_counter()
            attack.run(messages, targets)
            results["advfast"].append(time.perf_counter() - t0)
        finally:
            advfast.ops.l2_step_ = original
        model.requires_grad_(True)
        t0 = time.perf_counter()
        reference_attack(model, tokenizer, messages, targets, steps=steps, alpha=1e-3)
        results["reference"].append(time.perf_counter() - t0)
    work = prompts * steps
    best = {k: min(v) for k, v in results.items()}
    return {
        "prompts": prompts,
        "steps": steps,
        "repeats": repeats,
        "advfast_prompt_steps_per_s": work / best["advfast"],
        "reference_prompt_steps_per_s": work / best["reference"],
        "speedup": best["reference"] / best["advfast"],
        "fused_op_share": timed.seconds / sum(results["advfast"]),
        "fused_op_calls": timed.calls,
        "fused_op_ms": 1e3 * timed.seconds / max(timed.calls, 1),
        "threads": torch.get_num_threads(),
    }


def random_llama() -> tuple[Any, Any]:
    """A mid-size random Llama (hidden 512, 8 layers, SmolLM2's vocabulary and tokenizer where installed)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from advfast.llm import load_model

    _, tokenizer = load_model("smollm2")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval(), tokenizer


def test_embedding_attack_against_the_reference_loop(benchmark: Any) -> None:
    """A short side-by-side run on a small random Llama over the test tokenizer (pytest-benchmark records it)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from test_llm_tiny import tiny_llama, tiny_tokenizer

    model, tokenizer = tiny_llama(hidden_size=128, intermediate_size=256, num_hidden_layers=4), tiny_tokenizer()
    row = compare(model, tokenizer, prompts=4, steps=3)
    benchmark.extra_info.update(row)
    benchmark.pedantic(lambda: None, rounds=1)
    assert row["speedup"] > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--random-llama", action="store_true", help="a mid-size random Llama instead of --model")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="also write the figures to this file (e.g. benchmarks/results/llm-cpu.json)")
    args = parser.parse_args()
    from advfast.llm import load_model

    model, tokenizer = random_llama() if args.random_llama else load_model(args.model)
    name = "random Llama (hidden 512, 8 layers)" if args.random_llama else args.model
    row = compare(model, tokenizer, prompts=args.prompts, steps=args.steps, repeats=args.repeats)
    print(
        f"{name}: {row['prompts']} prompts x {row['steps']} steps, {row['threads']} threads, best of {row['repeats']}"
    )
    print(f"  advfast    {row['advfast_prompt_steps_per_s']:.3f} prompt-steps/s")
    print(f"  reference  {row['reference_prompt_steps_per_s']:.3f} prompt-steps/s")
    print(f"  speedup    {row['speedup']:.2f}x")
    print(
        f"  the fused update: {row['fused_op_share']:.4%} of advfast's time ({row['fused_op_ms']:.3f} ms per call, "
        f"{row['fused_op_calls']} calls)"
    )
    if args.json:
        import json
        import platform

        record = {"model": name, "device": "cpu", "machine": platform.processor() or platform.machine(),
                  "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), **row}  # fmt: skip
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
