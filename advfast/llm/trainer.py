"""Training a chat model to hold against prompt attacks, on the shared run loop: ``sft`` (refusal fine-tuning)
or ``cat`` (continuous adversarial training, Xhonneux et al. 2024).

One step over ``B`` attacked prompts ``x`` (each with a safe response ``y_s`` and an unsafe target ``y_u``) and
``B`` benign prompts ``b`` (with the original model's answers ``a``), with ``CE_i`` each row's mean token
cross-entropy::

    sft:  L = w_t * mean_i CE(y_s | x_i) + w_u * mean_j CE(a | b_j)
    cat:  d = embedding attack toward y_u on x's prompt tokens (weights frozen, fixed steps, no early stop)
          L = w_t * mean_i toward(CE(y_s | x_i + d_i)) + w_a * mean_i away(CE(y_u | x_i + d_i))
              + w_u * mean_j CE(a | b_j)

with CAT's floors: ``toward(c) = c`` above the toward cutoff (``cutoff + 0.001 c`` below) and ``away(c) = -c``
above the away cutoff (``cutoff - 0.001 c`` below), per row. Rows go through the model in one forward pass.
The original model's answers are generated once, before the first step, and kept in the checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from advfast.llm.attacks.embedding import EmbeddingAttack
from advfast.llm.chat import context_length, encode_prompt, encode_text, end_of_turn, make_batch, pad_id
from advfast.llm.config import LLMTrainConfig
from advfast.llm.embeddings import embed, embedding_layer
from advfast.llm.evaluate import clean_behaviour, generate, response_loss
from advfast.llm.finetune import kept_state, load_kept_state, prepare_model
from advfast.llm.losses import away_loss, response_logits, score_response, toward_loss
from advfast.llm.models import load_model
from advfast.llm.parallel import (
    average_replicated_grads,
    full_state,
    load_optimizer_state,
    load_sharded_weights,
    uses_fsdp,
    wrap,
)
from advfast.llm.state import frozen_for_attack
from advfast.llm.tasks import Task, load_task
from advfast.runtime import distributed as dist_utils
from advfast.runtime.checkpoint import CheckpointError, check_finite_state, load_checkpoint
from advfast.runtime.loop import RunLoop, checkpoint_path

CHECKPOINT = "last.pt"


class _Pairs(Dataset):
    """Item ``i``: (attacked training prompt ``i``, benign training prompt ``i mod n_benign``)."""

    def __init__(self, n: int, n_benign: int) -> None:
        self.n, self.n_benign = n, n_benign

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[int, int]:
        return i, i % self.n_benign


class ContinuousAT(RunLoop):
    """``ContinuousAT(model, tokenizer, method="cat", eps=0.05, out="runs/smol-cat").fit()``.

    ``model`` and ``tokenizer`` default to ``config.model`` from the registry; the other keyword arguments are
    :class:`LLMTrainConfig` fields (or pass ``config=``). With LoRA, peft injects adapters into ``model``
    (changing it in place); with full fine-tuning every weight trains. Under torchrun the model is wrapped in
    DDP (or its decoder layers sharded by FSDP, ``parallel="fsdp"``) and each process takes 1/N of every batch.
    """

    role = "llm"
    config_class = LLMTrainConfig
    checkpoint_file = CHECKPOINT

    def __init__(
        self,
        model: nn.Module | None = None,
        tokenizer: Any = None,
        *,
        config: LLMTrainConfig | None = None,
        task: Task | None = None,
        **options: Any,
    ) -> None:
        if config is None:
            if model is not None:  # the run records what it trained; resume needs the same model passed again
                options.setdefault("model", f"<passed: {type(model).__name__}>")
            config = LLMTrainConfig(**options)
        elif options:
            raise ValueError(f"give either config or config fields, not both (got {sorted(options)})")
        ctx = dist_utils.setup(config.device)
        super().__init__(config, ctx)
        if model is None:
            model, tokenizer = load_model(config.model, dtype=config.dtype, device=ctx.device)
        elif tokenizer is None:
            raise ValueError("tokenizer is missing: give the model's tokenizer with the model")
        embedding_layer(model)
        self.tokenizer = tokenizer
        self.task = (
            task
            if task is not None
            else load_task(
                config.task, config.seed, train=config.train_size, val=config.val_size, benign_train=config.train_size
            )
        )
        if len(self.task.train) < config.batch_size or not self.task.benign_train:
            raise ValueError(
                f"the task has {len(self.task.train)} training prompts and {len(self.task.benign_train)} benign "
                f"ones; batch_size {config.batch_size} needs at least one batch of each"
            )
        torch.manual_seed(config.seed)
        self.fsdp = uses_fsdp(ctx, config.parallel)
        self.model = prepare_model(model.to(ctx.device), config.finetune, r=config.lora_r, alpha=config.lora_alpha)
        self.train_model = wrap(self.model, ctx, config.parallel)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.lr, weight_decay=config.weight_decay)
        self.loader = dist_utils.make_loader(
            _Pairs(len(self.task.train), len(self.task.benign_train)),
            config.batch_size,
            ctx,
            shuffle=True,
            seed=config.seed,
            drop_last=True,
        )
        self.attack = EmbeddingAttack(
            self.model,
            tokenizer,
            eps=config.eps,
            steps=config.attack_steps,
            alpha=config.alpha,
            norm=config.norm,
            region=config.region,
            early_stop=False,
            freeze_weights=not self.fsdp,
        )
        self.end_of_turn = end_of_turn(tokenizer)
        self.pad = pad_id(tokenizer)
        self.max_length = context_length(self.model)
        self.references: dict[str, list[list[int]]] | None = None
        self.sums: dict[str, float] = {}
        self.report_paths: dict[str, Path] = {}

    config: LLMTrainConfig

    @classmethod
    def resume(cls, run: str | Path, *, model: nn.Module | None = None, tokenizer: Any = None, **overrides: Any):
        """Continue the run in folder ``run`` (see :meth:`RunLoop.resume`); ``model``/``tokenizer``: the base
        model, when it is not one the registry can load."""
        path = checkpoint_path(run, cls.checkpoint_file)
        if not path.is_file():
            raise CheckpointError(f"{run}: no {cls.checkpoint_file} to resume (is it a run folder of llm-train?)")
        record = load_checkpoint(path, role=cls.role, required=("config",))
        config = cls.config_class.from_dict({**record["config"], **overrides, "out": str(path.parent)})
        if model is None and config.model.startswith("<passed"):
            raise ValueError(
                f"{run} trained a model passed in Python ({config.model}); resume it with "
                "ContinuousAT.resume(run, model=..., tokenizer=...)"
            )
        trainer = cls(model, tokenizer, config=config)
        trainer.load(path)
        return trainer

    def description(self) -> str:
        return f"{self.config.method} {self.config.task}"

    def needed_bytes(self) -> int:
        weights = sum(p.numel() * p.element_size() for p in self.trainable)
        return 6 * weights + 2**22  # weights and AdamW's two moments, old and new file during a save

    # ---- the original model's answers ---------------------------------------------------------------------

    def reference_answers(self) -> dict[str, list[list[int]]]:
        """The untrained model's greedy answers to the benign prompts (train: the utility targets; test, the
        first ``eval_limit``: the utility reference), generated on first use (before any step) and kept in the
        checkpoint. Every process generates all of them (the same work, in lockstep: FSDP needs it)."""
        if self.references is None:
            splits = {
                "benign_train": self.task.benign_train,
                "benign_test": self.task.benign_test[: self.config.eval_limit or None],
            }
            self.say(f"generating the original model's answers to {sum(map(len, splits.values()))} benign prompts")
            out = {}
            for split, benign in splits.items():
                prompts = [b.messages for b in benign]
                answers = generate(self.model, self.tokenizer, prompts, max_new_tokens=self.config.max_new_tokens)
                # An answer that ended on its own learns to end; a cut one does not.
                out[split] = [a + self.end_of_turn if len(a) < self.config.max_new_tokens else a for a in answers]
            self.references = out
        return self.references

    # ---- one batch ----------------------------------------------------------------------------------------

    def start_epoch(self) -> None:
        self.model.train()

    def train_batch(self, batch: Any, seed: int) -> bool:
        c, tok = self.config, self.tokenizer
        references = self.reference_answers()["benign_train"]
        adv_index, benign_index = batch[0].tolist(), batch[1].tolist()
        examples = [self.task.train[i] for i in adv_index]
        prompts = [encode_prompt(tok, e.messages) for e in examples]
        safe = [encode_text(tok, e.safe) + self.end_of_turn for e in examples]
        benign = [encode_prompt(tok, self.task.benign_train[j].messages) for j in benign_index]
        answers = [references[j] for j in benign_index]
        b = len(examples)
        cat = c.method == "cat"
        rows = (prompts + prompts + benign) if cat else (prompts + benign)
        responses = ([encode_text(tok, e.target) for e in examples] + safe + answers) if cat else (safe + answers)
        full = make_batch(rows, responses, pad=self.pad, max_length=self.max_length).to(self.ctx.device)
        embeds = embedding_layer(self.model)(full.input_ids)  # differentiable: full fine-tuning trains the table
        values: dict[str, float] = {}
        if cat:
            away_rows = full.rows(torch.arange(b, device=self.ctx.device))
            x = embed(self.model, away_rows.input_ids)
            with frozen_for_attack(self.model, freeze=not self.fsdp):
                x_adv, attack_losses, _, _ = self.attack.perturb(x, away_rows, away_rows.perturb_mask(c.region))
            delta = (x_adv - x).detach()  # zero outside the prompt's movable tokens
            embeds = embeds + torch.cat([delta, delta, torch.zeros_like(embeds[2 * b :])])
            values["attack_ce_first"] = attack_losses[0].mean().item()
            values["attack_ce_last"] = attack_losses[-1].mean().item()
        self.model.train()
        ce = score_response(response_logits(self.train_model, embeds, full), full).ce
        if cat:
            toward = toward_loss(ce[b : 2 * b], c.toward_cutoff).mean()
            away = away_loss(ce[:b], c.away_cutoff).mean()
            utility = ce[2 * b :].mean()
            loss = c.toward_weight * toward + c.away_weight * away + c.utility_weight * utility
            values.update(away_loss=away.item(), unsafe_ce=ce[:b].mean().item())
        else:
            toward = ce[:b].mean()
            utility = ce[b:].mean()
            loss = c.toward_weight * toward + c.utility_weight * utility
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training diverged: the loss is {loss.item()} at step {self.progress.step}; lower lr"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.fsdp:
            average_replicated_grads(self.model, self.ctx)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.progress.step += 1
        values.update(train_loss=loss.item(), toward_loss=toward.item(), utility_loss=utility.item())
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.sums["batches"] = self.sums.get("batches", 0.0) + 1
        return True

    # ---- epochs -------------------------------------------------------------------------------------------

    def epoch_record(self, seconds: float) -> dict[str, Any]:
        keys = sorted(k for k in self.sums if k != "batches")
        totals = dist_utils.all_reduce_sum([self.sums.get("batches", 0.0)] + [self.sums[k] for k in keys], self.ctx)
        batches = totals[0] or 1.0
        record: dict[str, Any] = {"epoch": self.progress.epoch + 1, "step": self.progress.step}
        record.update({k: v / batches for k, v in zip(keys, totals[1:], strict=True)})
        self.sums = {}
        started = time.perf_counter()
        record.update(self.validate())
        record["epoch_seconds"] = seconds
        record["val_seconds"] = time.perf_counter() - started
        return record

    def validate(self) -> dict[str, float]:
        """On the validation prompts (every process the same, in lockstep): the leak and refusal rates
        without an attack, and the safe response's loss."""
        val = self.task.val
        if not val:
            return {}
        behaviour = clean_behaviour(self.model, self.tokenizer, val, max_new_tokens=self.config.max_new_tokens)
        safe = [encode_text(self.tokenizer, e.safe) + self.end_of_turn for e in val]
        loss = response_loss(self.model, self.tokenizer, [e.messages for e in val], safe)
        self.model.train()
        return {
            "val_leak_rate": behaviour["leak_rate"],
            "val_refusal_rate": behaviour["refusal_rate"],
            "val_safe_loss": sum(loss) / len(loss),
        }

    def finish(self) -> None:
        p = self.progress
        if self.config.report and p.stop is None and self.ctx.is_main and not self.fsdp:
            from advfast.llm.report import write_run_report

            self.report_paths = write_run_report(self)
        elif self.config.report and p.stop is None and self.fsdp and self.ctx.is_main:
            self.say(f"report skipped under fsdp: run advfast llm-attack {self.out} for it")

    # ---- checkpoints --------------------------------------------------------------------------------------

    def save(self) -> None:
        # Gathering full states is a collective under FSDP: every process takes part, rank 0 keeps the result.
        self._states = full_state(self.model, self.optimizer, self.fsdp)
        super().save()
        self._states = None

    def checkpoint_state(self) -> dict[str, Any]:
        model_state, optimizer_state = self._states
        return {
            "model_name": self.config.model,
            "finetune": self.config.finetune,
            "lora": {"r": self.config.lora_r, "alpha": self.config.lora_alpha},
            "weights": kept_state(model_state, self.config.finetune),
            "optimizer": optimizer_state,
            "references": self.references,
            "task": self.task.describe(),
        }

    def rank_state(self) -> dict[str, Any]:
        return {"sums": dict(self.sums)}

    def required_keys(self) -> tuple[str, ...]:
        return ("finetune", "weights", "optimizer", "references")

    def load_state(self, record: dict[str, Any], rank_state: dict[str, Any], path: Path) -> None:
        if record["finetune"] != self.config.finetune:
            raise CheckpointError(f"{path}: a {record['finetune']} checkpoint, not a {self.config.finetune} one")
        check_finite_state(record["weights"], path)
        if self.fsdp:
            load_sharded_weights(self.model, record["weights"])
        else:
            load_kept_state(self.model, record["weights"], self.config.finetune, path)
        load_optimizer_state(self.model, self.optimizer, record["optimizer"], self.fsdp)
        self.references = record["references"]
        self.sums = dict(rank_state.get("sums", {}))
