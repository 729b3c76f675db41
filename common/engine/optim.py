"""Optimizers (SGD, Adam, AdamW as the original) over parameter groups built from TRAIN.LR_MULT and no-decay rules.

`TRAIN.LR` is per sample, as in the original: the optimizer's base LR is LR x total batch size.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

# Module types whose `weight` is a normalisation scale (no weight decay under TRAIN.NO_DECAY_NORM_BIAS).
NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)


def total_batch_size(cfg: Any, world_size: int) -> int:
    """world_size x sum(TRAIN.BATCH_IMAGES) x GRAD_ACCUMULATE_STEPS (BATCH_IMAGES may be a per-dataset list)."""
    per_process = cfg.TRAIN.BATCH_IMAGES
    per_process = sum(per_process) if isinstance(per_process, (list, tuple)) else per_process
    return world_size * int(per_process) * int(cfg.TRAIN.GRAD_ACCUMULATE_STEPS)


def parse_lr_mult(lr_mult: Sequence) -> list[tuple[str, float]]:
    """TRAIN.LR_MULT entries as (substring, mult); accepts pairs or "substring,mult" strings."""
    rules = []
    for entry in lr_mult:
        if isinstance(entry, str):
            substring, _, mult = entry.rpartition(",")
        elif isinstance(entry, (list, tuple)) and len(entry) == 2:
            substring, mult = entry
        else:
            raise ValueError(f"TRAIN.LR_MULT: expected (substring, mult) pairs, found {entry!r}")
        rules.append((str(substring), float(mult)))
    return rules


def no_decay_names(module: nn.Module) -> set[str]:
    """Names of all biases and of the weights of normalisation layers (LayerNorm, BatchNorm, GroupNorm)."""
    names = set()
    for module_name, sub in module.named_modules():
        is_norm = isinstance(sub, NORM_TYPES) or "Norm" in type(sub).__name__
        for param_name, _ in sub.named_parameters(recurse=False):
            if param_name == "bias" or is_norm:
                names.add(f"{module_name}.{param_name}" if module_name else param_name)
    return names


def build_param_groups(
    module: nn.Module, base_lr: float, weight_decay: float, lr_mult: Sequence = (), no_decay_norm_bias: bool = False
) -> list[dict]:
    """One group per (LR_MULT rule, decay kind); each trainable parameter lands in exactly one group.

    The first rule whose substring occurs in the parameter name wins (the original put a parameter that matched
    several rules into several groups). Parameters matching no rule go to the default group (mult 1).
    Each group carries "name", "lr", "initial_lr" (the schedules scale it) and "weight_decay".
    """
    rules = parse_lr_mult(lr_mult)
    skip_decay = no_decay_names(module) if no_decay_norm_bias else set()
    groups: dict[tuple[str, bool], dict] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        label, mult = next(((sub, m) for sub, m in rules if sub in name), ("default", 1.0))
        decays = name not in skip_decay
        key = (label, decays)
        if key not in groups:
            lr = base_lr * mult
            groups[key] = {
                "name": f"{label}" + ("" if decays else "/no_decay"), "params": [], "lr": lr, "initial_lr": lr,
                "weight_decay": weight_decay if decays else 0.0,
            }
        groups[key]["params"].append(param)
    return list(groups.values())


class OriginalAdamW(torch.optim.Optimizer):
    """AdamW exactly as the original's `common/nlp/bert/optimization.py` (HF's old AdamW, correct_bias=True).

    Per step t: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    p -= lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps); then p -= lr * wd * p.
    torch.optim.AdamW differs in two places: it decays p before the update, and it adds eps to sqrt(v / (1-b2^t))
    rather than to sqrt(v), which changes the first thousands of steps when eps is 1e-6.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch.optim.Optimizer API
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
                t = float(state["step"])
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(param.grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(param.grad, param.grad, value=1 - beta2)
                step_size = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                param.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(group["eps"]), value=-step_size)
                if group["weight_decay"] > 0:
                    param.mul_(1 - group["lr"] * group["weight_decay"])
        return loss


def _fast_kwargs(params: list[Tensor]) -> dict:
    """fused kernels on CUDA, foreach elsewhere (both keep the maths of the plain loop)."""
    if params and all(p.is_cuda for p in params):
        return {"fused": True}
    return {"foreach": True}


def build_optimizer(cfg: Any, module: nn.Module, world_size: int) -> torch.optim.Optimizer:
    """The optimizer named by TRAIN.OPTIMIZER at base LR = TRAIN.LR x total batch (logged as the effective LR)."""
    total_batch = total_batch_size(cfg, world_size)
    base_lr = float(cfg.TRAIN.LR) * total_batch
    groups = build_param_groups(
        module, base_lr, float(cfg.TRAIN.WD), cfg.TRAIN.get("LR_MULT", ()),
        bool(cfg.TRAIN.get("NO_DECAY_NORM_BIAS", False)),
    )
    params = [p for g in groups for p in g["params"]]
    name = str(cfg.TRAIN.OPTIMIZER)
    if name == "SGD":
        optimizer = torch.optim.SGD(groups, lr=base_lr, momentum=float(cfg.TRAIN.MOMENTUM), **_fast_kwargs(params))
    elif name == "Adam":
        optimizer = torch.optim.Adam(groups, lr=base_lr, **_fast_kwargs(params))
    elif name == "AdamW" and bool(cfg.TRAIN.get("ADAMW_ORIGINAL", True)):
        optimizer = OriginalAdamW(groups, lr=base_lr, betas=(0.9, 0.999), eps=1e-6)
    elif name == "AdamW":
        optimizer = torch.optim.AdamW(groups, lr=base_lr, betas=(0.9, 0.999), eps=1e-6, **_fast_kwargs(params))
    else:
        raise ValueError(f"TRAIN.OPTIMIZER: expected one of SGD, Adam, AdamW, found {name!r}")
    log.info(
        "optimizer %s: effective LR %.6g = TRAIN.LR %.6g x total batch %d "
        "(world %d x BATCH_IMAGES %s x accumulate %d); groups: %s",
        name, base_lr, float(cfg.TRAIN.LR), total_batch, world_size, cfg.TRAIN.BATCH_IMAGES,
        int(cfg.TRAIN.GRAD_ACCUMULATE_STEPS),
        ", ".join(f"{g['name']}({len(g['params'])} params, lr {g['lr']:.3g}, wd {g['weight_decay']:g})"
                  for g in groups),
    )
    return optimizer
