"""What a text adversary is: built once on a classifier, then one ``loss(batch)`` call per training batch,
which runs the method's passes, back-propagates the training loss itself and returns its value."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import ClassVar

import torch
from torch import Tensor, nn

from advfast.text.batch import TextBatch
from advfast.text.classifier import EmbeddingClassifier
from advfast.text.dropout import DropoutReplay
from advfast.text.guard import model_left_as_it_was, needs_autograd
from advfast.text.validation import check_generator_for

Trace = list[Tensor]


class Adversary:
    """Base class of the embedding-space adversaries (FGM, PGD, FreeLB, SMART, R3F).

    Args (common to all):
        model: a ``transformers`` sequence classifier (or any module with ``get_input_embeddings()`` and a
            ``forward(inputs_embeds=..., attention_mask=...)`` returning logits ``[B, C]``). Left as it was by
            every call: train/eval flags and ``requires_grad`` untouched, no hooks; the parameters' ``.grad``
            receive exactly the gradients the subclass documents (and on an exception are restored to what
            they were).
        special_token_ids: token ids that never move, e.g. ``tokenizer.all_special_ids`` (default: the
            pad/bos/eos/sep/cls ids of ``model.config``); a batch's ``special_tokens_mask`` takes precedence.
        generator: draws the random initial perturbations (default: torch's global generator).
        wrapper: a ``DistributedDataParallel`` around ``model`` (training under torchrun): every forward runs
            through it, all but the method's last one under ``wrapper.no_sync()``, so the gradients its passes
            accumulate are all-reduced once, by the last backward (FreeLB's K backwards: K - 1 local ones).

    The perturbation ``delta [B, L, D]`` is added to ``model.get_input_embeddings()(input_ids)`` (a gather)
    and fed back as ``inputs_embeds``; padding and special tokens never move.
    """

    name: ClassVar[str]
    same_dropout: bool = False

    def __init__(
        self,
        model: nn.Module,
        *,
        special_token_ids: Iterable[int] | None = None,
        generator: torch.Generator | None = None,
        wrapper: nn.Module | None = None,
    ) -> None:
        self.model = model
        self.classifier = EmbeddingClassifier(model, special_token_ids)
        self.device = self.classifier.device
        check_generator_for(generator, self.device)
        self.generator = generator
        if wrapper is not None and (getattr(wrapper, "module", None) is not model or not hasattr(wrapper, "no_sync")):
            raise ValueError(
                f"wrapper must be a DistributedDataParallel around model (with .module and no_sync()), got "
                f"{type(wrapper).__name__}"
            )
        self.wrapper = wrapper

    # ---- the public call -----------------------------------------------------------------------------

    def loss(
        self,
        batch: Mapping[str, Tensor],
        *,
        scaler: torch.amp.GradScaler | None = None,
        trace: Trace | None = None,
    ) -> Tensor:
        """Run the method on ``batch``, back-propagate its training loss, return the loss's value (detached
        scalar). Call ``optimizer.step()`` next: the gradients are already in the parameters' ``.grad``
        (added to what was there, as ``loss.backward()`` would).

        ``scaler``: a GradScaler for float16 training; every training backward then runs on the scaled loss
        (call ``scaler.step(optimizer)``, ``scaler.update()`` after). ``trace``: when a list is given, a
        detached copy of every perturbation ``delta [B, L, D]`` fed to the model is appended, in order (for
        tests and inspection).
        """
        needs_autograd(f"{type(self).__name__}.loss")
        text = self.prepare(batch)
        with model_left_as_it_was(self.model), torch.enable_grad():
            value = self._loss(text, _Backward(scaler), trace)
        return value.detach()

    def _loss(self, batch: TextBatch, backward: _Backward, trace: Trace | None) -> Tensor:
        raise NotImplementedError

    # ---- helpers of the subclasses -------------------------------------------------------------------

    def prepare(self, batch: Mapping[str, Tensor]) -> TextBatch:
        return self.classifier.prepare(batch)

    def embed(self, batch: TextBatch) -> Tensor:
        """Token embeddings ``[B, L, D]`` (a gather, in the graph: a training backward reaches the table)."""
        return self.classifier.embed(batch)

    def logits(self, batch: TextBatch, inputs_embeds: Tensor, *, last: bool = False) -> Tensor:
        """The model's logits ``[B, C]`` on ``inputs_embeds`` [B, L, D]. ``last`` marks the method's last
        forward, the one whose backward ends the step: with a ``wrapper``, only that one synchronises."""
        if self.wrapper is None:
            return self.classifier.logits(batch, inputs_embeds)
        with contextlib.nullcontext() if last else self.wrapper.no_sync():
            return self.classifier.logits(batch, inputs_embeds, forward=self.wrapper)

    def dropout_replay(self, enabled: bool) -> DropoutReplay:
        return DropoutReplay(self.device, enabled and self.model.training)

    @staticmethod
    def record(trace: Trace | None, delta: Tensor) -> None:
        if trace is not None:
            trace.append(delta.detach().clone())


class _Backward:
    """``loss.backward()``, on the scaled loss when a GradScaler is given."""

    def __init__(self, scaler: torch.amp.GradScaler | None) -> None:
        self.scaler = scaler

    def __call__(self, loss: Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()
