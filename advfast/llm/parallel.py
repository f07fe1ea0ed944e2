"""Data-parallel LLM training under torchrun: DDP replicas, or FSDP (``torch.distributed.fsdp.fully_shard``)
for a model that does not fit one device.

With FSDP each decoder layer is one shard group (its weights, and LoRA adapters inside it, are split across
the processes and gathered only while the layer runs); the token embeddings, the final norm and the output
head stay whole on every process (they are tied in many models, and the attacks and the training step read
the embedding table directly), and their gradients are averaged by hand after each backward pass. Full state
dicts are gathered for checkpoints (every process must take part), so a checkpoint written under FSDP loads
anywhere.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from advfast.runtime.distributed import DistContext


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks: the largest ``nn.ModuleList`` inside it (``model.layers``, ``h``...)."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ValueError(f"parallel fsdp: found no list of decoder layers in {type(model).__name__}")
    return list(max(lists, key=len))


def wrap(model: nn.Module, ctx: DistContext, parallel: str) -> nn.Module:
    """The module the training step calls: ``model`` itself in one process, DDP around it, or ``model`` with
    its decoder layers sharded in place by FSDP."""
    if not ctx.distributed:
        return model
    if parallel == "ddp":
        device_ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)
    from torch.distributed.fsdp import fully_shard

    for layer in decoder_layers(model):
        fully_shard(layer)
    return model


def uses_fsdp(ctx: DistContext, parallel: str) -> bool:
    return ctx.distributed and parallel == "fsdp"


def average_replicated_grads(model: nn.Module, ctx: DistContext) -> None:
    """Under FSDP: average the gradients of the parameters FSDP does not own (embeddings, final norm, head)."""
    from torch.distributed.tensor import DTensor

    for p in model.parameters():
        if p.grad is not None and not isinstance(p, DTensor):
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(ctx.world_size)


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool) -> tuple[dict, dict]:
    """``(model state, optimizer state)``, whole (under FSDP: a collective, the result on rank 0); the
    optimizer's state is keyed by parameter name, so it loads into a model sharded any other way."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    # Under FSDP the whole state lands on rank 0 alone (in CPU memory), which is the process that writes.
    options = StateDictOptions(full_state_dict=True, cpu_offload=True) if fsdp else StateDictOptions()
    model_state, optimizer_state = get_state_dict(model, optimizer, options=options)
    return _plain(model_state), _plain(optimizer_state)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict, fsdp: bool) -> None:
    """Restore the optimizer state :func:`full_state` returned (every process passes the whole state)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=fsdp))


def load_sharded_weights(model: nn.Module, state: dict) -> None:
    """Under FSDP: load a whole (possibly partial: adapters only) model state into the sharded model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))


def _plain(state: Any) -> Any:
    """Detached CPU tensors and plain containers (what a weights-only checkpoint holds)."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu().clone()
    if isinstance(state, dict):
        return {k: _plain(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_plain(v) for v in state)
    return state
