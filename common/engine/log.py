"""Logging for training runs: rank-0 console, one log file per rank, TensorBoard scalars, speed and ETA lines."""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

log = logging.getLogger(__name__)


def setup_logging(output_dir: str | None, cfg_name: str, rank: int) -> str | None:
    """Console on rank 0 (warnings only elsewhere) and `{cfg_name}_{YYYY-mm-dd-HH-MM}[_rankN].log` in output_dir."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        if getattr(handler, "_vlbert", False):
            root.removeHandler(handler)
    fmt = logging.Formatter(f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    console.setFormatter(fmt)
    console._vlbert = True
    root.addHandler(console)
    if output_dir is None:
        return None
    os.makedirs(output_dir, exist_ok=True)
    suffix = "" if rank == 0 else f"_rank{rank}"
    path = os.path.join(output_dir, f"{cfg_name}_{time.strftime('%Y-%m-%d-%H-%M')}{suffix}.log")
    file_handler = logging.FileHandler(path)
    file_handler.setFormatter(fmt)
    file_handler._vlbert = True
    root.addHandler(file_handler)
    return path


class TrainLogger:
    """Speed / ETA / metric lines every LOG_FREQUENT steps and TensorBoard scalars (rank 0 only)."""

    def __init__(self, log_dir: str | None, frequent: int, is_main: bool, samples_per_step: int, total_steps: int):
        self.frequent, self.is_main = max(int(frequent), 1), is_main
        self.samples_per_step, self.total_steps = samples_per_step, total_steps
        self.writer = None
        if is_main and log_dir:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(log_dir=log_dir)
        self._tic, self._steps_since = time.time(), 0

    def scalar(self, name: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(name, value, step)

    def due(self, step_in_epoch: int) -> bool:
        return (step_in_epoch + 1) % self.frequent == 0

    def step_done(self) -> None:
        self._steps_since += 1

    def log_train(self, epoch: int, batch: int, global_step: int, values: dict[str, float], lrs: list[float]) -> None:
        """One line with samples/s and ETA, plus the scalars; `values` are already reduced across ranks."""
        elapsed = max(time.time() - self._tic, 1e-9)
        speed = self._steps_since * self.samples_per_step / elapsed
        remaining = max(self.total_steps - global_step, 0) * elapsed / max(self._steps_since, 1)
        self._tic, self._steps_since = time.time(), 0
        if not self.is_main:
            return
        eta = f"{int(remaining // 3600)}h {int(remaining % 3600 // 60)}m {int(remaining % 60)}s"
        shown = "\t".join(f"Train-{k}={v:.6f}" for k, v in values.items())
        log.info("Epoch[%d] Batch [%d]\tSpeed: %.2f samples/s\tETA: %s\t%s", epoch, batch, speed, eta, shown)
        for name, value in values.items():
            self.scalar(f"Train-{name}", value, global_step)
        for i, lr in enumerate(lrs):
            self.scalar(f"LR/Group_{i}", lr, global_step)
        self.scalar("Speed/samples_per_s", speed, global_step)

    def log_epoch_train(self, epoch: int, values: dict[str, float]) -> None:
        """The training metrics of the whole epoch (already reduced across ranks)."""
        if self.is_main:
            log.info("Epoch[%d] Train: %s", epoch, "\t".join(f"Train-{k}={v:.6f}" for k, v in values.items()))
            for name, value in values.items():
                self.scalar(f"Epoch-Train-{name}", value, epoch + 1)

    def log_val(self, epoch: int, values: dict[str, float]) -> None:
        if not self.is_main:
            return
        log.info("Epoch[%d] Validation: %s", epoch, "\t".join(f"Val-{k}={v:.6f}" for k, v in values.items()))
        for name, value in values.items():
            self.scalar(f"Val-{name}", value, epoch + 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
