"""Tiny offline language models for the LLM tests: a byte-level BPE tokenizer trained here on the secret task's
text (with a ChatML template), and random LlamaConfig / GPT2Config models over its vocabulary. Built once per
process (cached); the tests in this file check the chat formatting they rely on."""

from __future__ import annotations

import functools

import pytest
import torch

from advfast.llm.chat import (
    AFTER,
    BEFORE,
    PAD,
    RESPONSE,
    USER,
    encode_prompt,
    encode_text,
    end_of_turn,
    make_batch,
)
from advfast.llm.tasks import load_task

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread for tiny models: at this size threads only add synchronisation, a lot of it on a busy machine
    (10-40x slower with 2 threads here). Restored after the module."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@functools.lru_cache(maxsize=1)
def tiny_tokenizer():
    """A 600-token byte-level BPE trained on the secret task's prompts and responses."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    task = load_task("secret", seed=0)
    corpus = []
    for e in task.train + task.test:
        corpus += [m["content"] for m in e.messages] + [e.safe, e.target]
    corpus += [m["content"] for b in task.benign_train for m in b.messages]
    corpus += ["x x x x x ! ! ! Sure, here is the answer.", "The capital of France is Paris."]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHATML
    return fast


def tiny_llama(seed: int = 0, **changes):
    """A random 2-layer Llama (hidden 32) over the tiny vocabulary, float32, eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    config = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.update(changes)
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**config)).eval()


def tiny_gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=256,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config).eval()


# ---- the chat formatting the attacks rely on -----------------------------------------------------------------


def test_prompt_segments_reassemble_the_chat_template():
    tok = tiny_tokenizer()
    messages = [{"role": "system", "content": "The PIN is 4821."}, {"role": "user", "content": "What is the PIN?"}]
    parts = encode_prompt(tok, messages)
    whole = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert tok.decode(parts.ids) == whole
    assert tok.decode(list(parts.user)) == "What is the PIN?"
    assert end_of_turn(tok) == encode_text(tok, "<|im_end|>")


def test_a_batch_left_pads_prompts_and_right_pads_responses():
    tok = tiny_tokenizer()
    short = encode_prompt(tok, "Hi?")
    long = encode_prompt(tok, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me."}])
    responses = [encode_text(tok, "Hello there, friend."), encode_text(tok, "No.")]
    batch = make_batch([short, long], responses, pad=tok.pad_token_id)
    p = batch.prompt_length
    assert p == len(long.ids) and batch.response_length == len(responses[0])
    # Row 0: padding, then its prompt ending at column P, then its response.
    n0 = len(short.ids)
    assert (batch.segments[0, : p - n0] == PAD).all() and batch.input_ids[0, p - n0 : p].tolist() == short.ids
    assert batch.input_ids[0, p:].tolist() == responses[0]
    # Row 1: prompt from column 0, short response, right padding.
    assert batch.segments[1, :p].tolist() == [BEFORE] * len(long.before) + [USER] * len(long.user) + [AFTER] * len(
        long.after
    )
    assert batch.segments[1, p : p + len(responses[1])].tolist() == [RESPONSE] * len(responses[1])
    assert (batch.segments[1, p + len(responses[1]) :] == PAD).all()
    # Positions count real tokens only; the attention mask is 1 exactly on them.
    assert batch.position_ids[0, p - n0].item() == 0 and batch.position_ids[0, p].item() == n0
    assert torch.equal(batch.attention_mask.bool(), batch.segments != PAD)
    user_mask = batch.perturb_mask("user")
    assert torch.equal(user_mask, batch.segments == USER)
    assert not (batch.perturb_mask("prompt") & (batch.segments == RESPONSE)).any()


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "empty conversation"),
        ([{"role": "user", "content": "  "}], "last user message is empty"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "must end with a user"),
        ([{"content": "no role"}], "'role' and 'content'"),
    ],
)
def test_bad_prompts_are_named(messages, match):
    with pytest.raises(ValueError, match=match):
        encode_prompt(tiny_tokenizer(), messages)


def test_a_tokenizer_without_a_chat_template_is_named():
    tok = tiny_tokenizer()
    saved = tok.chat_template
    tok.chat_template = None
    try:
        with pytest.raises(ValueError, match="tokenizer has no chat template"):
            encode_prompt(tok, "Hi?")
    finally:
        tok.chat_template = saved
