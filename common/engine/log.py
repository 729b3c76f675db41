"""Logging for training runs: rank-0 console, one log file per rank, and the LOG_FREQUENT speed line (samples/s,
TFLOP/s per device, MFU, the share of time spent waiting for data, peak memory, ETA) with the same figures in
metrics.jsonl, TensorBoard and the sinks TRAIN.REPORT_TO names (common/engine/sinks.py).
"""
from __future__ import annotations

import logging
import os
import resource
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from common.config_node import ConfigNode
from common.engine.flops import FlopCounter, peak_flops_per_s
from common.engine.run_info import all_device_names, run_header
from common.engine.sinks import build_sinks, check_report_to, import_reporter

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


def peak_memory_gib(device: torch.device) -> float:
    """CUDA: max allocated since the last reading (then reset); CPU: the process's resident high-water mark."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        return peak / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # Linux reports KiB


class SpeedMeter:
    """The figures of one log interval on this rank: wall time, steps, FLOPs counted, time blocked on the loader."""

    def __init__(self, samples_per_step: int, device: torch.device, flops: FlopCounter | None = None,
                 peak_flops: float | None = None):
        self.samples_per_step, self.device = samples_per_step, device
        self.flops, self.peak_flops = flops, peak_flops
        self.data_wait, self.steps = 0.0, 0
        self._tic = time.perf_counter()

    def read(self) -> dict[str, Any]:
        """samples/s (all ranks), TFLOP/s and MFU (this device), data-wait share, peak memory; then reset."""
        elapsed = max(time.perf_counter() - self._tic, 1e-9)
        flops = self.flops.take() if self.flops is not None else None
        figures = {
            "samples_per_s": self.steps * self.samples_per_step / elapsed,
            "flops_per_step": None if flops is None else flops / max(self.steps, 1),
            "tflops": None if flops is None else flops / elapsed / 1e12,
            "mfu": None if flops is None or not self.peak_flops else flops / elapsed / self.peak_flops,
            "data_wait": min(self.data_wait / elapsed, 1.0),
            "peak_mem_gib": peak_memory_gib(self.device),
            "elapsed_s": elapsed, "steps": self.steps,
        }
        self.data_wait, self.steps, self._tic = 0.0, 0, time.perf_counter()
        return figures


class TimedBatches:
    """Iterates `loader` and adds the time spent waiting for each batch (workers' start-up included) to the meter."""

    def __init__(self, loader: Iterable, meter: SpeedMeter):
        self.loader, self.meter = loader, meter

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        start = time.perf_counter()
        iterator = iter(self.loader)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            finally:
                self.meter.data_wait += time.perf_counter() - start
            yield batch
            start = time.perf_counter()


def _speed_text(f: dict[str, Any]) -> str:
    parts = [f"Speed: {f['samples_per_s']:.2f} samples/s"]
    if f["tflops"] is not None:
        parts.append(f"TFLOP/s: {f['tflops']:.4g}")
    if f["mfu"] is not None:
        parts.append(f"MFU: {f['mfu']:.3f}")
    parts += [f"Data-wait: {100 * f['data_wait']:.1f}%", f"Peak-mem: {f['peak_mem_gib']:.2f} GiB"]
    return "\t".join(parts)


class TrainLogger:
    """The LOG_FREQUENT lines and the records behind them; only rank 0 writes (sinks are empty elsewhere)."""

    def __init__(self, frequent: int, is_main: bool, samples_per_step: int, total_steps: int,
                 meter: SpeedMeter, sinks: list[Any] | None = None):
        self.frequent, self.is_main = max(int(frequent), 1), is_main
        self.samples_per_step, self.total_steps = samples_per_step, total_steps
        self.meter, self.sinks = meter, list(sinks or [])

    def write(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(record)

    def timed(self, loader: Iterable) -> TimedBatches:
        return TimedBatches(loader, self.meter)

    def due(self, step_in_epoch: int) -> bool:
        return (step_in_epoch + 1) % self.frequent == 0

    def step_done(self) -> None:
        self.meter.steps += 1

    def log_train(self, epoch: int, batch: int, global_step: int, values: dict[str, float], lrs: list[float]) -> None:
        """One speed line plus the record; `values` are already reduced across ranks."""
        figures = self.meter.read()
        remaining = max(self.total_steps - global_step, 0) * figures.pop("elapsed_s") / max(figures.pop("steps"), 1)
        if not self.is_main:
            return
        eta = f"{int(remaining // 3600)}h {int(remaining % 3600 // 60)}m {int(remaining % 60)}s"
        shown = "\t".join(f"Train-{k}={v:.6f}" for k, v in values.items())
        log.info("Epoch[%d] Batch [%d]\t%s\tETA: %s\t%s", epoch, batch, _speed_text(figures), eta, shown)
        self.write({"kind": "train", "epoch": epoch, "batch": batch, "step": global_step, "time": time.time(),
                    "metrics": dict(values), "lr": list(lrs), **figures, "eta_s": remaining})

    def log_epoch_train(self, epoch: int, values: dict[str, float], step: int | None = None) -> None:
        """The training metrics of the whole epoch (already reduced across ranks)."""
        if self.is_main:
            log.info("Epoch[%d] Train: %s", epoch, "\t".join(f"Train-{k}={v:.6f}" for k, v in values.items()))
            self.write({"kind": "epoch_train", "epoch": epoch, "step": step, "time": time.time(),
                        "metrics": dict(values)})

    def log_val(self, epoch: int, values: dict[str, float], step: int | None = None) -> None:
        if self.is_main:
            log.info("Epoch[%d] Validation: %s", epoch, "\t".join(f"Val-{k}={v:.6f}" for k, v in values.items()))
            self.write({"kind": "val", "epoch": epoch, "step": step, "time": time.time(), "metrics": dict(values)})

    def log_step_val(self, epoch: int, step: int, values: dict[str, float]) -> None:
        """An in-loop validation (TRAIN.VAL_EVERY_STEPS), by global step: the line and a "step_val" record."""
        if self.is_main:
            log.info("Epoch[%d] Step[%d] Validation: %s", epoch, step,
                     "\t".join(f"Val-{k}={v:.6f}" for k, v in values.items()))
            self.write({"kind": "step_val", "epoch": epoch, "step": step, "time": time.time(), "metrics": dict(values)})

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        if self.meter.flops is not None:
            self.meter.flops.remove()


def train_dtype(cfg: ConfigNode) -> torch.dtype:
    return torch.bfloat16 if cfg.TRAIN.BF16 else torch.float16 if cfg.TRAIN.FP16 else torch.float32


def device_peak(cfg: ConfigNode, device: torch.device) -> tuple[float, str]:
    """TRAIN.PEAK_TFLOPS when > 0, else a short matmul probe in the training dtype (no global random draw)."""
    declared = float(cfg.TRAIN.PEAK_TFLOPS)
    if declared > 0:
        return declared * 1e12, "TRAIN.PEAK_TFLOPS"
    peak = peak_flops_per_s(device, train_dtype(cfg), onednn=bool(cfg.NETWORK.CPU_ONEDNN_LINEAR))
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return peak, "measured"


def build_train_logger(cfg: ConfigNode, env: Any, out_dir: str, log_dir: str | None, cfg_name: str,
                       module: nn.Module, samples_per_step: int, total_steps: int) -> TrainLogger:
    """Every rank checks TRAIN.REPORT_TO and joins the device-name gather; rank 0 probes the peak, counts FLOPs,
    opens the sinks and writes the "run" header. Call it with the plain module, before any wrapping."""
    report_to = check_report_to(cfg.TRAIN.REPORT_TO)
    for name in report_to:
        if name != "tensorboard":
            import_reporter(name)  # every rank fails alike when a named package is missing
    devices = all_device_names(env.device)
    if not env.is_main:
        return TrainLogger(cfg.LOG_FREQUENT, False, samples_per_step, total_steps, SpeedMeter(samples_per_step,
                                                                                              env.device))
    peak, source = device_peak(cfg, env.device)
    log.info("MFU against %.4g TFLOP/s per device (%s, %s)", peak / 1e12, source, devices[0])
    meter = SpeedMeter(samples_per_step, env.device, FlopCounter(module), peak)
    config = cfg.to_dict()
    sinks = build_sinks(report_to, out_dir, log_dir or os.path.join(out_dir, "tensorboard_logs"), cfg_name, config)
    logger = TrainLogger(cfg.LOG_FREQUENT, True, samples_per_step, total_steps, meter, sinks)
    logger.write(run_header(config, cfg_name, env.world_size, devices, peak, source))
    return logger


def describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
