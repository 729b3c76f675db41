"""Optimizers (SGD, Adam, AdamW as the original) over parameter groups built from TRAIN.LR_MULT and no-decay rules.

`TRAIN.LR` is per sample, as in the original: the optimizer's base LR is LR x total batch size.
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

from common.config_node import ConfigNode

log = logging.getLogger(__name__)

# Module types whose `weight` is a normalisation scale (no weight decay under TRAIN.NO_DECAY_NORM_BIAS).
NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)


def total_batch_size(cfg: ConfigNode, world_size: int) -> int:
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


def visual_layer_scales(module: nn.Module, decay: float) -> dict[str, tuple[int, float]]:
    """TRAIN.VISUAL_LR_DECAY: parameter name -> (layer, LR scale d^(L - layer)) over the visual backbone.

    The backbone is the outermost submodule with an `lr_layer_ids()` method (every image front-end has one:
    name -> (layer, L), stem = 0); its projection and everything else (VL-BERT, heads) are not listed: scale 1.
    """
    if decay == 1.0:
        return {}
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"TRAIN.VISUAL_LR_DECAY must be in (0, 1] (1.0 = off), found {decay}")
    scales: dict[str, tuple[int, float]] = {}
    claimed: list[str] = []
    for prefix, sub in module.named_modules():
        if any(prefix.startswith(c) for c in claimed) or not callable(getattr(sub, "lr_layer_ids", None)):
            continue
        claimed.append(f"{prefix}." if prefix else "")
        for name, (layer, count) in sub.lr_layer_ids().items():
            scales[f"{prefix}.{name}" if prefix else name] = (layer, decay ** (count - layer))
    if not scales:
        log.warning("TRAIN.VISUAL_LR_DECAY %g: the module has no visual backbone (precomputed features); no effect",
                    decay)
    return scales


def build_param_groups(
    module: nn.Module, base_lr: float, weight_decay: float, lr_mult: Sequence = (), no_decay_norm_bias: bool = False,
    visual_lr_decay: float = 1.0,
) -> list[dict]:
    """One group per (LR_MULT rule, decay kind, visual layer); each trainable parameter lands in exactly one group.

    The first rule whose substring occurs in the parameter name wins (the original put a parameter that matched
    several rules into several groups). Parameters matching no rule go to the default group (mult 1). With
    `visual_lr_decay` < 1 the visual backbone's parameters are split further by layer, their LR scaled by
    `visual_layer_scales` on top of the rule's mult. Each group carries "name", "lr", "initial_lr" (the schedules
    scale it) and "weight_decay".
    """
    rules = parse_lr_mult(lr_mult)
    skip_decay = no_decay_names(module) if no_decay_norm_bias else set()
    layers = visual_layer_scales(module, float(visual_lr_decay))
    groups: dict[tuple[str, bool, int | None], dict] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        label, mult = next(((sub, m) for sub, m in rules if sub in name), ("default", 1.0))
        decays = name not in skip_decay
        layer, scale = layers.get(name, (None, 1.0))
        key = (label, decays, layer)
        if key not in groups:
            lr = base_lr * mult * scale
            groups[key] = {
                "name": label + ("" if layer is None else f"/visual{layer}") + ("" if decays else "/no_decay"),
                "params": [], "lr": lr, "initial_lr": lr, "weight_decay": weight_decay if decays else 0.0,
            }
        groups[key]["params"].append(param)
    return list(groups.values())


def format_param_groups(groups: Sequence[dict]) -> str:
    """A compact table of the optimizer's groups: name, tensors, parameters, LR, weight decay."""
    width = max([len("group")] + [len(g["name"]) for g in groups])
    lines = [f"{'group':<{width}}  tensors      params        lr      wd"]
    for g in groups:
        count = sum(p.numel() for p in g["params"])
        lines.append(f"{g['name']:<{width}}  {len(g['params']):>7}  {count:>10,}  {g['lr']:>8.3g}  "
                     f"{g['weight_decay']:>6g}")
    return "\n".join(lines)


OriginalAdamWImpl = Literal["auto", "foreach", "loop"]


class OriginalAdamW(torch.optim.Optimizer):
    """AdamW exactly as the original's `common/nlp/bert/optimization.py` (HF's old AdamW, correct_bias=True).

    Per step t: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    p -= lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps); then p -= lr * wd * p.
    torch.optim.AdamW differs in two places: it decays p before the update, and it adds eps to sqrt(v / (1-b2^t))
    rather than to sqrt(v), which changes the first thousands of steps when eps is 1e-6.

    impl: "auto" runs torch's fused Adam kernel (one pass over memory) where the parameter's device supports it,
    with eps' = eps / sqrt(1-b2^t) so that its lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps') is the update
    above, and multi-tensor `torch._foreach_*` ops elsewhere; "foreach" always uses the foreach ops; "loop" is the
    per-parameter reference. All three keep the same state per parameter: "step" (0-d float32 CPU tensor),
    "exp_avg" and "exp_avg_sq" (like the parameter), so checkpoints move freely between them. fp32/fp64 parameters
    match the loop to rounding; for bf16/fp16 ones the fused kernel computes in fp32 and rounds once per update.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0, impl: OriginalAdamWImpl = "auto"):
        if impl not in ("auto", "foreach", "loop"):
            raise ValueError(f"OriginalAdamW impl: expected 'auto', 'foreach' or 'loop', found {impl!r}")
        # impl stays out of the defaults so that param_groups (and the state_dict) keep the original keys
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self.impl = impl

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch.optim.Optimizer API
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            if self.impl == "loop":
                self._loop_step(group)
            else:
                self._multi_tensor_step(group)
        return loss

    def _init_state(self, param: Tensor) -> dict:
        state = self.state[param]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    def _loop_step(self, group: dict) -> None:
        """The reference: one parameter at a time, ~7 passes over memory each."""
        beta1, beta2 = group["betas"]
        for param in group["params"]:
            if param.grad is None:
                continue
            state = self._init_state(param)
            state["step"] += 1
            t = float(state["step"])
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            exp_avg.lerp_(param.grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(param.grad, param.grad, value=1 - beta2)
            step_size = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
            param.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(group["eps"]), value=-step_size)
            if group["weight_decay"] > 0:
                param.mul_(1 - group["lr"] * group["weight_decay"])

    def _multi_tensor_step(self, group: dict) -> None:
        """The same update over buckets of parameters sharing (device, dtype, step count).

        Parameters of one group can have different step counts (one without a gradient in some steps), and the
        bias corrections (hence eps') depend on the step, so each count gets its own kernel call.
        """
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        if any(p.grad.is_sparse for p in params):
            raise RuntimeError("OriginalAdamW does not support sparse gradients")
        states = [self._init_state(p) for p in params]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        buckets: dict[tuple[torch.device, torch.dtype, float], list[int]] = defaultdict(list)
        for i, (param, step) in enumerate(zip(params, steps, strict=True)):
            buckets[(param.device, param.dtype, float(step))].append(i)
        lr, eps, (beta1, beta2) = float(group["lr"]), float(group["eps"]), group["betas"]
        fused_devices = _get_fused_kernels_supported_devices()
        for (device, dtype, t), index in buckets.items():
            bucket = [params[i] for i in index]
            grads = [p.grad for p in bucket]
            exp_avgs = [states[i]["exp_avg"] for i in index]
            exp_avg_sqs = [states[i]["exp_avg_sq"] for i in index]
            bias_correction1, bias_correction2 = 1 - beta1**t, 1 - beta2**t
            if self.impl == "auto" and device.type in fused_devices and dtype.is_floating_point:
                # the fused kernel reads the step count per tensor (same value for the bucket) and never writes it
                step = torch.full((), t, dtype=torch.float32, device=device)
                torch._fused_adam_(
                    bucket, grads, exp_avgs, exp_avg_sqs, [], [step] * len(bucket), lr=lr, beta1=beta1,
                    beta2=beta2, weight_decay=0.0, eps=eps / math.sqrt(bias_correction2), amsgrad=False,
                    maximize=False,
                )
            else:
                torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
                torch._foreach_mul_(exp_avg_sqs, beta2)
                torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
                denom = torch._foreach_sqrt(exp_avg_sqs)
                torch._foreach_add_(denom, eps)
                step_size = lr * math.sqrt(bias_correction2) / bias_correction1
                torch._foreach_addcdiv_(bucket, exp_avgs, denom, value=-step_size)
        if group["weight_decay"] > 0:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])


def _fast_kwargs(params: list[Tensor]) -> dict:
    """{"fused": True} when torch has fused kernels for the params (floating point, one device type that
    torch.optim lists as fused-capable: CPU, CUDA, ...), else {"foreach": True}; both keep the maths of the loop."""
    device_types = {p.device.type for p in params}
    # TRAIN.DATA_PARALLEL fsdp: fused SGD has no DTensor rule, and foreach ops refuse DTensor shards mixed with the
    # plain replicated parameters: shards alone take foreach, a mix the per-parameter loop
    sharded = sum(type(p).__name__ == "DTensor" for p in params)
    if sharded:
        return {"foreach": sharded == len(params)}
    if (len(device_types) == 1 and device_types <= set(_get_fused_kernels_supported_devices())
            and all(torch.is_floating_point(p) for p in params)):
        return {"fused": True}
    return {"foreach": True}


def build_optimizer(cfg: ConfigNode, module: nn.Module, world_size: int) -> torch.optim.Optimizer:
    """The optimizer named by TRAIN.OPTIMIZER at base LR = TRAIN.LR x total batch (logged as the effective LR)."""
    total_batch = total_batch_size(cfg, world_size)
    base_lr = float(cfg.TRAIN.LR) * total_batch
    groups = build_param_groups(
        module, base_lr, float(cfg.TRAIN.WD), cfg.TRAIN.LR_MULT, bool(cfg.TRAIN.NO_DECAY_NORM_BIAS),
        float(cfg.TRAIN.get("VISUAL_LR_DECAY", 1.0)))
    params = [p for g in groups for p in g["params"]]
    name = str(cfg.TRAIN.OPTIMIZER)
    if name == "SGD":
        optimizer = torch.optim.SGD(groups, lr=base_lr, momentum=float(cfg.TRAIN.MOMENTUM), **_fast_kwargs(params))
    elif name == "Adam":
        optimizer = torch.optim.Adam(groups, lr=base_lr, **_fast_kwargs(params))
    elif name == "AdamW" and bool(cfg.TRAIN.ADAMW_ORIGINAL):
        optimizer = OriginalAdamW(groups, lr=base_lr, betas=(0.9, 0.999), eps=1e-6)
    elif name == "AdamW":
        optimizer = torch.optim.AdamW(groups, lr=base_lr, betas=(0.9, 0.999), eps=1e-6, **_fast_kwargs(params))
    else:
        raise ValueError(f"TRAIN.OPTIMIZER: expected one of SGD, Adam, AdamW, found {name!r}")
    if str(cfg.TRAIN.get("DATA_PARALLEL", "ddp")) == "zero1" and world_size > 1:  # hand-built configs: ddp
        optimizer = shard_optimizer_state(optimizer)
    log.info(
        "optimizer %s: effective LR %.6g = TRAIN.LR %.6g x total batch %d (world %d x BATCH_IMAGES %s x accumulate "
        "%d); parameter groups (TRAIN.LR_MULT, TRAIN.VISUAL_LR_DECAY, TRAIN.NO_DECAY_NORM_BIAS):\n%s",
        name, base_lr, float(cfg.TRAIN.LR), total_batch, world_size, cfg.TRAIN.BATCH_IMAGES,
        int(cfg.TRAIN.GRAD_ACCUMULATE_STEPS), format_param_groups(groups),
    )
    return optimizer


def shard_optimizer_state(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """TRAIN.DATA_PARALLEL zero1: the same optimizer (class, groups, hyper-parameters) as a ZeroRedundancyOptimizer,
    each rank keeping the state of its share of the parameters and broadcasting them after its step.

    The schedules set `lr` on its `param_groups` (all parameters), which it copies to the local optimizer each step.
    """
    import inspect

    from torch.distributed.optim import ZeroRedundancyOptimizer

    cls = type(optimizer)
    accepted = inspect.signature(cls.__init__).parameters
    defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    groups = [{k: v for k, v in group.items()} for group in optimizer.param_groups]
    sharded = ZeroRedundancyOptimizer(groups, optimizer_class=cls, **defaults)
    log.info("TRAIN.DATA_PARALLEL zero1: %s state sharded over %d ranks (this rank: %d of %d parameters)",
             cls.__name__, sharded.world_size, sum(len(g["params"]) for g in sharded.optim.param_groups),
             sum(len(g["params"]) for g in groups))
    return sharded
