"""Wrapping a model for training: torch.compile, then DDP or FSDP2 across torchrun's ranks.

One process is world size 1 and gets the model itself. DDP copies small models to every rank
and averages gradients; FSDP2 (`fully_shard`, as torchtitan) shards parameters, gradients and
optimizer state of large ones, one block at a time. Either way the loop calls `micro_step_sync`
so gradients are only exchanged on the last micro-step of an accumulated step.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from chatsmith.common.dist import dist_info
from chatsmith.common.errors import ChatsmithError
from chatsmith.train.optim import find_gpt

FSDP_AUTO_PARAMS = 1_000_000_000  # from here on a full copy per GPU (plus AdamW's 2) gets tight


def pick_parallel(choice: str, model: torch.nn.Module) -> str:
    """none (one process) | ddp | fsdp."""
    if choice not in ("auto", "ddp", "fsdp"):
        raise ChatsmithError(f"run.parallel is '{choice}'; choose auto, ddp or fsdp")
    if dist_info().world_size == 1:
        return "none"
    if choice == "auto":
        n = sum(p.numel() for p in model.parameters())
        return "fsdp" if n >= FSDP_AUTO_PARAMS else "ddp"
    return choice


def want_compile(choice: str, device: torch.device) -> bool:
    """auto: on for CUDA; off on CPUs, where compiling costs tens of seconds on few cores and the
    demo-sized model gained too little to pay it back within a demo run (see bench train)."""
    if choice not in ("auto", "on", "off", "true", "false"):
        raise ChatsmithError(f"compile is '{choice}'; choose auto, on or off")
    if choice == "auto":
        return device.type == "cuda"
    return choice in ("on", "true")


def wrap_model(model: torch.nn.Module, device: torch.device, parallel: str, compile: bool) -> torch.nn.Module:
    """The module the training steps call: DDP around the model, or the model sharded in place by
    FSDP2, then compiled. The model itself stays uncompiled (except FSDP2's blocks), so the
    stage's evaluation runs eagerly instead of compiling a second graph for a few batches."""
    if parallel == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # Parameters stay float32 (the optimizer's copy); compute in bf16 on GPUs as autocast would.
        mp = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16 if device.type == "cuda" else None, reduce_dtype=torch.float32
        )
        gpt = find_gpt(model)
        for block in gpt.layers:
            if compile:
                block.compile()
            fully_shard(block, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        return model
    if compile:
        # Inductor's CPU kernels accumulate scatters (the embedding's backward) with atomic adds
        # in parallel loops, so the sum order, and so the loss curve, changed from run to run.
        # In deterministic mode it keeps ATen's ordered kernels for those few ops instead.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = False  # NaN-filling costs time, buys nothing
    wrapped = model
    if parallel == "ddp":
        wrapped = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(wrapped) if compile else wrapped


def micro_step_sync(wrapped: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient exchange on all but the last micro-step (DDP's no_sync, FSDP2's flag)."""
    wrapped = getattr(wrapped, "_orig_mod", wrapped)  # the module torch.compile wraps
    if isinstance(wrapped, DDP):
        return contextlib.nullcontext() if sync else wrapped.no_sync()
    if hasattr(wrapped, "set_requires_gradient_sync"):  # an FSDP2 module
        wrapped.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def full_model_state(model: torch.nn.Module, parallel: str) -> dict[str, torch.Tensor]:
    """Plain CPU tensors of every parameter (gathered from the shards under FSDP2; all ranks call)."""
    if parallel != "fsdp":
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def optimizer_state(model: torch.nn.Module, opt: Any, parallel: str) -> dict[str, Any]:
    """The optimizer state to save; gathered to whole tensors under FSDP2 (all ranks call)."""
    if parallel != "fsdp":
        return opt.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return {"optimizers": [get_optimizer_state_dict(model, o, options=opts) for o in opt.optimizers]}


def load_optimizer_state(model: torch.nn.Module, opt: Any, state: dict[str, Any], parallel: str) -> None:
    if parallel != "fsdp":
        opt.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=False)
    for o, s in zip(opt.optimizers, state["optimizers"]):
        set_optimizer_state_dict(model, o, s, options=opts)


def gather_objects(obj: Any) -> list[Any]:
    """One object per rank, in rank order (a list of one for a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
