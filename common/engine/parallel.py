"""Data parallelism of a training run, TRAIN.DATA_PARALLEL: `ddp` (full replicas), `zero1` (DDP, optimizer state
sharded by `common/engine/optim.py`) or `fsdp` (FSDP2: parameters, gradients and optimizer state sharded).

`fsdp` applies `fully_shard` to every transformer layer and every backbone stage, then to the root; 0-dim parameters
(VL-BERT's `visual_scale_*` gates, which `fully_shard` refuses) and BatchNorm's stay plain replicated tensors whose
gradients `common/engine/sharded_grads.py` averages over ranks, so checkpoint keys and shapes do not change.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator

import torch
from torch import nn

from common.config_node import ConfigNode
from common.engine.dist import DistEnv
from common.model.bert_encoder import BertLayer
from common.model.resnet import BasicBlock, Bottleneck

log = logging.getLogger(__name__)

MODES = ("ddp", "zero1", "fsdp")
CHECKPOINT_FORMATS = ("file", "dcp")
# Modules that become one FSDP unit each (one all-gather before their forward, one reduce-scatter after backward).
SHARD_UNIT_TYPES: tuple[type[nn.Module], ...] = (BertLayer,)
# A backbone stage = an nn.Sequential of these residual blocks (ResNet layer1..layer3 and the C5 RoI head).
STAGE_BLOCK_TYPES: tuple[type[nn.Module], ...] = (Bottleneck, BasicBlock)
REPLICATED = "data_parallel_replicated"  # attribute set on parameters kept out of the FSDP shards


def data_parallel_mode(cfg: ConfigNode) -> str:
    """TRAIN.DATA_PARALLEL, checked (with TRAIN.CHECKPOINT_FORMAT, which every mode reads)."""
    mode = str(cfg.TRAIN.DATA_PARALLEL)
    if mode not in MODES:
        raise ValueError(f"TRAIN.DATA_PARALLEL: expected one of {', '.join(MODES)}, found {mode!r}")
    fmt = str(cfg.TRAIN.CHECKPOINT_FORMAT)
    if fmt not in CHECKPOINT_FORMATS:
        raise ValueError(f"TRAIN.CHECKPOINT_FORMAT: expected one of {', '.join(CHECKPOINT_FORMATS)}, found {fmt!r}")
    if bool(cfg.TRAIN.CHECKPOINT_ASYNC) and fmt != "dcp":
        raise ValueError("TRAIN.CHECKPOINT_ASYNC true needs TRAIN.CHECKPOINT_FORMAT dcp (a .model file is written "
                         "by rank 0 alone and synchronously)")
    return mode


def shards_parameters(cfg: ConfigNode, env: DistEnv) -> bool:
    """True when this run shards the module itself (fsdp with more than one process)."""
    return data_parallel_mode(cfg) == "fsdp" and env.is_distributed


def shard_units(module: nn.Module) -> list[nn.Module]:
    """Transformer layers and backbone stages, in module order (children before the root is sharded)."""
    units = []
    for sub in module.modules():
        if isinstance(sub, SHARD_UNIT_TYPES):
            units.append(sub)
        elif isinstance(sub, nn.Sequential) and len(sub) and all(isinstance(b, STAGE_BLOCK_TYPES) for b in sub):
            units.append(sub)
    return units


def mixed_precision_policy(cfg: ConfigNode) -> torch.distributed.fsdp.MixedPrecisionPolicy:
    """Parameters all-gathered in the autocast dtype of TRAIN.BF16 / TRAIN.FP16 (fp32 otherwise); gradients are
    always reduced in fp32. Autocast stays on around the forward, so the ops it keeps in fp32 (LayerNorm, softmax,
    losses) stay there."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    dtype = torch.bfloat16 if bool(cfg.TRAIN.BF16) else torch.float16 if bool(cfg.TRAIN.FP16) else None
    return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)


def shard_module(module: nn.Module, cfg: ConfigNode, env: DistEnv) -> nn.Module:
    """TRAIN.DATA_PARALLEL fsdp: `fully_shard` the units, then the root, in place (parameters become DTensor shards);
    any other mode, or one process: the module unchanged. Call it before building the optimizer."""
    if not shards_parameters(cfg, env):
        if data_parallel_mode(cfg) == "fsdp":
            log.info("TRAIN.DATA_PARALLEL fsdp with one process: the module runs unsharded")
        return module
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(env.device.type, (env.world_size,))
    policy = mixed_precision_policy(cfg)
    units = shard_units(module)
    replicated = replicated_parameters(module)
    for unit in units:
        fully_shard(unit, mesh=mesh, mp_policy=policy, ignored_params=replicated)
    fully_shard(module, mesh=mesh, mp_policy=policy, ignored_params=replicated)
    fsdp_modules = [unit for unit in units] + [module]
    module.no_sync = functools.partial(_no_gradient_sync, module)  # the trainer's DDP accumulation call
    module.train = functools.partial(_train_with_gathered_eval, module, type(module).train.__get__(module),
                                     fsdp_modules)
    log.info("TRAIN.DATA_PARALLEL fsdp: %d unit(s) (transformer layers, backbone stages) + the root over %d ranks; "
             "%d small parameter(s) replicated (0-dim, BatchNorm); parameters gathered in %s, gradients reduced in "
             "fp32", len(units), env.world_size, len(replicated), policy.param_dtype or torch.float32)
    return module


def replicated_parameters(module: nn.Module) -> set[nn.Parameter]:
    """Parameters kept out of the shards, marked `REPLICATED`: 0-dim ones (fully_shard refuses them; their keys
    and shapes stay as released checkpoints have them) and BatchNorm's (float32 like its running statistics, which
    CPU batch_norm requires, whatever dtype the shards are gathered in). Both are tiny."""
    replicated = {p for p in module.parameters() if p.dim() == 0}
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._NormBase):
            replicated.update(sub.parameters(recurse=False))
    for param in replicated:
        setattr(param, REPLICATED, True)
    return replicated


@contextlib.contextmanager
def _no_gradient_sync(root: nn.Module) -> Iterator[None]:
    """DDP's `no_sync` for FSDP2: gradients of the non-last micro-batches accumulate unsharded, unreduced."""
    root.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        root.set_requires_gradient_sync(True)


def _train_with_gathered_eval(root: nn.Module, train: functools.partial, fsdp_modules: list[nn.Module],
                              mode: bool = True) -> nn.Module:
    """`root.train(mode)` that gathers every unit once when evaluation starts and frees them when training resumes.

    Ranks may run different numbers of validation batches (nothing is duplicated there); with the parameters
    gathered up front, an evaluation forward needs no collective, so no rank waits for another.
    """
    if mode != root.training:
        for sub in fsdp_modules:
            if not mode:
                if sub is not root:
                    sub.set_reshard_after_forward(False, recurse=False)
                sub.unshard()
            else:
                sub.reshard()
                if sub is not root:
                    sub.set_reshard_after_forward(True, recurse=False)
    return train(mode)


def wrap_data_parallel(module: nn.Module, cfg: ConfigNode, env: DistEnv, loader=None) -> nn.Module:
    """ddp / zero1: DistributedDataParallel (find_unused_parameters as TRAIN.FIND_UNUSED_PARAMETERS decides, from
    one dry step on `loader`'s first samples when "auto"); fsdp: the module, already sharded by `shard_module`."""
    if not env.is_distributed or data_parallel_mode(cfg) == "fsdp":
        return module
    from common.engine.unused_params import find_unused_parameters

    find_unused = find_unused_parameters(module, cfg.TRAIN.FIND_UNUSED_PARAMETERS, loader, env)
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused)
