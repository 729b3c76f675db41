"""Gradients under TRAIN.DATA_PARALLEL fsdp: DTensor shards for the sharded parameters, plain tensors for the
replicated 0-dim ones. The total norm for CLIP_GRAD_NORM is the norm over the whole model (each shard counted once,
on every rank), and the fp16 loss scaler finds an inf/NaN on any rank's shard.
"""
from __future__ import annotations

from collections import defaultdict

import torch
import torch.distributed as torch_dist
from torch import Tensor
from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
from torch.distributed.tensor import DTensor

from common.engine.parallel import REPLICATED


def has_sharded_gradients(params: list[Tensor]) -> bool:
    """True when some gradient is a DTensor shard or some parameter is FSDP's replicated scalar."""
    return any(isinstance(p.grad, DTensor) or getattr(p, REPLICATED, False) for p in params)


def average_replicated_gradients(params: list[Tensor]) -> None:
    """Mean over ranks of the gradients FSDP does not reduce (the parameters kept out of the shards), in one
    all-reduce; every rank must call it with the same parameters."""
    grads = [p.grad for p in params if getattr(p, REPLICATED, False) and p.grad is not None]
    if not grads or not torch_dist.is_initialized():
        return
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    torch_dist.all_reduce(flat)
    flat /= torch_dist.get_world_size()
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def total_norm(grads: list[Tensor]) -> Tensor:
    """L2 norm of all gradients, sharded or not: sqrt(full norm of the shards^2 + norm of the replicated ones^2).
    A plain 0-dim tensor, equal on every rank (a collective: every rank calls it)."""
    sharded = [g for g in grads if isinstance(g, DTensor)]
    plain = [g for g in grads if not isinstance(g, DTensor)]
    squares = []
    if sharded:
        norm = torch.nn.utils.get_total_norm(sharded)
        squares.append((norm.full_tensor() if isinstance(norm, DTensor) else norm).float() ** 2)
    if plain:
        squares.append(torch.nn.utils.get_total_norm(plain).float() ** 2)
    return torch.stack(squares).sum().sqrt()


def clip_sharded(params: list[Tensor], clip_norm: float) -> Tensor:
    """Average the replicated gradients, clip everything to `clip_norm` if > 0; the total norm before clipping."""
    average_replicated_gradients(params)
    norm = total_norm([p.grad for p in params])
    if clip_norm > 0:  # torch's clip_grads_with_norm_ formula, applied to each rank's local shards
        coefficient = torch.clamp(clip_norm / (norm + 1e-6), max=1.0)
        local = [p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad for p in params]
        torch._foreach_mul_(local, coefficient)
    return norm


class FsdpGradScaler(ShardedGradScaler):
    """ShardedGradScaler (inf/NaN found on any rank skips the step on all) that also unscales a mix of DTensor
    shards and plain tensors: each DTensor is unscaled through its local shard."""

    def _unscale_grads_(self, optimizer: torch.optim.Optimizer, inv_scale: Tensor, found_inf: Tensor,
                        allow_fp16: bool = True) -> dict[torch.device, Tensor]:
        per_device: dict[tuple[torch.device, torch.dtype], list[Tensor]] = defaultdict(list)
        for group in optimizer.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad.to_local() if isinstance(param.grad, DTensor) else param.grad
                if not allow_fp16 and grad.dtype == torch.float16:
                    raise ValueError("Attempting to unscale FP16 gradients.")
                per_device[(grad.device, grad.dtype)].append(grad)
        found: dict[torch.device, Tensor] = {}
        with torch.no_grad():
            for (device, _), grads in per_device.items():
                found.setdefault(device, found_inf.to(device))
                torch._amp_foreach_non_finite_check_and_unscale_(grads, found[device], inv_scale.to(device))
        if not found:
            found[found_inf.device] = found_inf
        return found
