"""LR schedules of the original (step with warmup, triangle, plateau), stepped once after each optimizer update.

`step` and `triangle` are pure functions of the update index t: the update number t (0-based) runs at
initial_lr x factor(t). The original stepped its scheduler before the optimizer, so its first update used factor(1);
here the first update uses factor(0), the order PyTorch expects.
"""
from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Sequence
from functools import partial

import torch

from common.config_node import ConfigNode

log = logging.getLogger(__name__)


def warmup_multistep_factor(
    step: int, milestones: Sequence[int], gamma: float, warmup_steps: int, warmup_factor: float, warmup_method: str
) -> float:
    """maskrcnn-benchmark's WarmupMultiStepLR factor at update `step`."""
    warmup = 1.0
    if step < warmup_steps:
        if warmup_method == "constant":
            warmup = warmup_factor
        elif warmup_method == "linear":
            alpha = step / warmup_steps
            warmup = warmup_factor * (1 - alpha) + alpha
        else:
            raise ValueError(f"TRAIN.WARMUP_METHOD: expected 'constant' or 'linear', found {warmup_method!r}")
    return warmup * gamma ** bisect.bisect_right(list(milestones), step)


def triangle_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear 0 -> 1 over warmup_steps, then linear down to 0 at total_steps (HF WarmupLinearSchedule)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return max(0.0, (total_steps - step) / max(1.0, total_steps - warmup_steps))


class StepwiseSchedule:
    """Sets every group's lr to initial_lr x factor(t) where t counts optimizer updates."""

    def __init__(self, optimizer: torch.optim.Optimizer, factor: Callable[[int], float]):
        self.optimizer, self.factor, self.step_count = optimizer, factor, 0
        self._apply()

    def _apply(self) -> None:
        scale = self.factor(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * scale

    def step(self) -> None:
        """Call after each optimizer update."""
        self.step_count += 1
        self._apply()

    def after_epoch(self, score: float | None) -> None:
        """Epoch-level hook; only the plateau schedule uses the score."""

    def current_lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()


class PlateauSchedule:
    """torch's ReduceLROnPlateau with the original's settings, fed the host metric once per validated epoch.

    The original stepped it at the start of the next epoch with the last score, so the LR of every epoch is the
    same as here; it also lacked resume support, which `state_dict` adds.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, factor: float):
        self.optimizer = optimizer
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=factor, patience=1, threshold=1e-4, threshold_mode="rel",
            cooldown=2, eps=1e-8,
        )

    def step(self) -> None:
        """Per-update hook; the plateau schedule changes the LR only between epochs."""

    def after_epoch(self, score: float | None) -> None:
        if score is None:
            return
        before = self.current_lrs()
        self.plateau.step(score)
        if self.current_lrs() != before:
            log.info("plateau: host metric %.6g stalled, LR %s -> %s", score, before, self.current_lrs())

    def current_lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"plateau": self.plateau.state_dict(), "lrs": self.current_lrs()}

    def load_state_dict(self, state: dict) -> None:
        self.plateau.load_state_dict(state["plateau"])
        for group, lr in zip(self.optimizer.param_groups, state["lrs"], strict=True):
            group["lr"] = lr


LRSchedule = StepwiseSchedule | PlateauSchedule


def build_lr_schedule(cfg: ConfigNode, optimizer: torch.optim.Optimizer, iters_per_epoch: int) -> LRSchedule:
    """The schedule named by TRAIN.LR_SCHEDULE; `iters_per_epoch` counts optimizer updates (batches / accumulation)."""
    train = cfg.TRAIN
    warmup_steps = int(train.WARMUP_STEPS) if train.WARMUP else 0
    name = str(train.LR_SCHEDULE)
    if name == "step":
        milestones = [int(round(float(e) * iters_per_epoch)) for e in train.LR_STEP]
        factor = partial(
            warmup_multistep_factor, milestones=milestones, gamma=float(train.LR_FACTOR), warmup_steps=warmup_steps,
            warmup_factor=float(train.WARMUP_FACTOR), warmup_method=str(train.WARMUP_METHOD),
        )
        return StepwiseSchedule(optimizer, factor)
    if name == "triangle":
        total = int(train.END_EPOCH) * iters_per_epoch
        return StepwiseSchedule(optimizer, partial(triangle_factor, warmup_steps=warmup_steps, total_steps=total))
    if name == "plateau":
        return PlateauSchedule(optimizer, float(train.LR_FACTOR))
    raise ValueError(f"TRAIN.LR_SCHEDULE: expected 'step', 'triangle' or 'plateau', found {name!r}")
