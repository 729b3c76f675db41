"""Model and optimizer state of a data-parallel run in the two forms checkpoints need: full (a `.model` file's
`state_dict` and index-keyed `optimizer`, gathered to rank 0 / scattered back), and by parameter name (each rank's
own share, for DCP; resharding to another world size or another TRAIN.DATA_PARALLEL mode follows from the names).

Works for every mode: plain replicas (ddp), ZeroRedundancyOptimizer (zero1: each rank owns some parameters'
state), FSDP2 DTensor shards (fsdp). Collective functions must be called on every rank in the same order.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor, distribute_tensor

from common.engine import dist
from common.engine.checkpoint import unwrap


def is_sharded(module: nn.Module) -> bool:
    """True when the module's parameters are FSDP2 DTensor shards."""
    return any(isinstance(p, DTensor) for p in unwrap(module).parameters())


def local_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer that holds this rank's state: ZeroRedundancyOptimizer's local one, else the optimizer."""
    from torch.distributed.optim import ZeroRedundancyOptimizer

    return optimizer.optim if isinstance(optimizer, ZeroRedundancyOptimizer) else optimizer


def parameter_names(module: nn.Module) -> dict[int, str]:
    """id(parameter) -> its state-dict name (a tied parameter: its first name)."""
    return {id(p): name for name, p in unwrap(module).named_parameters()}


# ---- by parameter name (DCP) ------------------------------------------------------------------------------------
def named_param_groups(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> list[dict]:
    """Every group's hyper-parameters with its parameters' names (all parameters, also under zero1)."""
    return [{**{k: v for k, v in group.items() if k != "params"}, "params": [names[id(p)] for p in group["params"]]}
            for group in optimizer.param_groups]


def named_optimizer_state(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> tuple[dict, dict]:
    """This rank's optimizer state by parameter name: ({name: {key: tensor}}, {name: {key: non-tensor value}})."""
    tensors: dict[str, dict[str, Tensor]] = {}
    others: dict[str, dict[str, Any]] = {}
    for param, state in local_optimizer(optimizer).state.items():
        name = names[id(param)]
        tensors[name] = {k: v for k, v in state.items() if isinstance(v, Tensor)}
        others[name] = {k: v for k, v in state.items() if not isinstance(v, Tensor)}
    return tensors, others


def load_named_optimizer_state(optimizer: torch.optim.Optimizer, names: dict[int, str], groups: list[dict],
                               tensors: dict[str, dict[str, Tensor]], others: dict[str, dict[str, Any]]) -> None:
    """Load state saved by parameter name into this rank's (local) optimizer; parameters absent from the
    checkpoint start without state, as they were. Group hyper-parameters (lr, initial_lr, ...) come from `groups`."""
    if len(groups) != len(optimizer.param_groups):
        raise ValueError(f"the checkpoint has {len(groups)} optimizer parameter groups, this run "
                         f"{len(optimizer.param_groups)} (TRAIN.LR_MULT / TRAIN.NO_DECAY_NORM_BIAS changed?)")
    for saved, group in zip(groups, optimizer.param_groups, strict=True):
        own = [names[id(p)] for p in group["params"]]
        if sorted(saved["params"]) != sorted(own):
            raise ValueError(f"optimizer group {group.get('name', '?')}: the checkpoint's parameters differ from "
                             f"this run's (e.g. {sorted(set(own) ^ set(saved['params']))[:3]})")
        group.update({k: v for k, v in saved.items() if k != "params"})
    local = local_optimizer(optimizer)
    index = {names[id(p)]: i for i, p in enumerate(p for g in local.param_groups for p in g["params"])}
    state = {index[name]: {**tensors.get(name, {}), **others.get(name, {})}
             for name in index if name in tensors or name in others}
    position, local_groups = 0, []
    for saved_group, group in zip(groups, local.param_groups, strict=True):
        hyper = {k: v for k, v in saved_group.items() if k != "params"}
        local_groups.append({**hyper, "params": list(range(position, position + len(group["params"])))})
        position += len(group["params"])
    local.load_state_dict({"state": state, "param_groups": local_groups})


# ---- full (.model files) ----------------------------------------------------------------------------------------
def full_tensor(value: Any) -> Any:
    """A DTensor gathered to a full CPU tensor on every rank (a collective); anything else unchanged."""
    return value.full_tensor().cpu() if isinstance(value, DTensor) else value


def gather_model_state(module: nn.Module) -> dict[str, Tensor]:
    """The module's full state dict (original keys, no `module.`): on rank 0 for a sharded module (others get
    an empty dict), the plain state dict otherwise."""
    if not is_sharded(module):
        return unwrap(module).state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(unwrap(module), options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def gather_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """`optimizer.state_dict()` of an unsharded run (index-keyed, every parameter): zero1 consolidates to rank 0,
    fsdp gathers every DTensor state; only rank 0's return value is complete."""
    from torch.distributed.optim import ZeroRedundancyOptimizer

    if isinstance(optimizer, ZeroRedundancyOptimizer):
        optimizer.consolidate_state_dict(to=0)
        return optimizer.state_dict() if dist.rank() == 0 else {}
    state_dict = optimizer.state_dict()
    state = {index: {k: full_tensor(v) for k, v in entry.items()} for index, entry in state_dict["state"].items()}
    return {"state": state, "param_groups": state_dict["param_groups"]} if dist.rank() == 0 else {}


def shard_like(value: Any, param: Tensor) -> Any:
    """A full tensor cut to this rank's share the way `param` is sharded (no communication); else unchanged."""
    if isinstance(param, DTensor) and isinstance(value, Tensor) and tuple(value.shape) == tuple(param.shape):
        return distribute_tensor(value.to(param.device), param.device_mesh, param.placements, src_data_rank=None)
    return value


def load_full_model_state(module: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Load a full state dict (every rank holds it) into the module, sharding it when the module is sharded."""
    plain = unwrap(module)
    if not is_sharded(module):
        plain.load_state_dict(state_dict)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(plain, state_dict, options=StateDictOptions(full_state_dict=True))


def load_full_optimizer_state(optimizer: torch.optim.Optimizer, state_dict: dict) -> None:
    """Load an index-keyed full optimizer state dict (a `.model` file's), sharding DTensor parameters' state."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if any(isinstance(p, DTensor) for p in params):
        state = {index: {k: shard_like(v, params[int(index)]) for k, v in entry.items()}
                 for index, entry in state_dict["state"].items()}
        state_dict = {"state": state, "param_groups": state_dict["param_groups"]}
    optimizer.load_state_dict(state_dict)
