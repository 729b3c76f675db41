"""Mixed precision: autocast in bf16 or fp16 (fp16 with a GradScaler), scaled backward, unscale + clip, step.

Steps the fp16 scaler skips (inf/NaN gradients) are counted on the device and reported at log steps,
so no per-step host sync is added.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable

import torch
from torch import Tensor

from common.config_node import ConfigNode

log = logging.getLogger(__name__)


def sharded_grads():
    """`common/engine/sharded_grads.py`, imported on first use (torch.distributed.fsdp only when needed)."""
    from common.engine import sharded_grads as module

    return module


class MixedPrecision:
    """Autocast settings plus the optional GradScaler, with the few calls the train step needs."""

    def __init__(self, device: torch.device, dtype: torch.dtype | None = None, init_scale: float | None = None,
                 sharded: bool = False):
        self.device, self.dtype = device, dtype
        self.scaler = None
        if dtype == torch.float16:
            kwargs = {} if init_scale is None else {"init_scale": float(init_scale)}
            # TRAIN.DATA_PARALLEL fsdp: a scaler that unscales DTensor shards and agrees on inf/NaN across ranks
            scaler_class = torch.amp.GradScaler if not sharded else sharded_grads().FsdpGradScaler
            self.scaler = scaler_class(device.type, **kwargs)
        self.skipped_steps = torch.zeros((), dtype=torch.long, device=device)
        self._reported_skips = 0

    @classmethod
    def from_config(cls, cfg: ConfigNode, device: torch.device) -> MixedPrecision:
        """TRAIN.FP16 (fp16 + scaler, initial scale FP16_LOSS_SCALE or the default for 'dynamic') or TRAIN.BF16."""
        fp16, bf16 = bool(cfg.TRAIN.FP16), bool(cfg.TRAIN.BF16)
        if fp16 and bf16:
            raise ValueError("TRAIN.FP16 and TRAIN.BF16 are both true; choose one")
        if bf16:
            return cls(device, torch.bfloat16)
        if fp16:
            scale = cfg.TRAIN.FP16_LOSS_SCALE
            sharded = str(cfg.TRAIN.get("DATA_PARALLEL", "ddp")) == "fsdp" and torch.distributed.is_initialized()
            return cls(device, torch.float16, None if isinstance(scale, str) else float(scale), sharded)
        return cls(device, None)

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss: Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale_and_clip(self, optimizer: torch.optim.Optimizer, params: Iterable[Tensor], clip_norm: float) -> Tensor:
        """Unscale the gradients (fp16), clip them to `clip_norm` if > 0; returns the total norm before clipping."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        with_grad = [p for p in params if p.grad is not None]
        if not with_grad:
            return torch.zeros((), device=self.device)
        if sharded_grads().has_sharded_gradients(with_grad):  # TRAIN.DATA_PARALLEL fsdp: DTensor-aware norm
            return sharded_grads().clip_sharded(with_grad, clip_norm)
        total = torch.nn.utils.get_total_norm([p.grad for p in with_grad])
        if clip_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(with_grad, clip_norm, total)
        return total

    def step(self, optimizer: torch.optim.Optimizer, grad_norm: Tensor | None = None) -> None:
        """optimizer.step() through the scaler; a step the scaler skips is counted (no host sync)."""
        if self.scaler is None:
            optimizer.step()
            return
        scale_before = self.scaler.get_scale() if grad_norm is None else None
        self.scaler.step(optimizer)
        self.scaler.update()
        if grad_norm is not None:
            self.skipped_steps += (~torch.isfinite(grad_norm)).long()
        elif self.scaler.get_scale() < scale_before:
            self.skipped_steps += 1

    def report_skipped(self) -> int:
        """Log the steps skipped by the loss scaler since the last report (a host sync; call at log steps)."""
        if self.scaler is None:
            return 0
        total = int(self.skipped_steps.item())
        new = total - self._reported_skips
        if new > 0:
            log.warning(
                "fp16 loss scaler skipped %d update(s) with inf/NaN gradients (%d in all); loss scale now %g",
                new, total, self.scaler.get_scale(),
            )
        self._reported_skips = total
        return new

    def state_dict(self) -> dict:
        return {"scaler": self.scaler.state_dict() if self.scaler is not None else {}}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

