"""The training loop shared by every task: build, resume, then epochs of accumulated steps, validation, checkpoints.

Read `fit` top to bottom: `build_run` makes every collaborator (optimizer, schedule, mixed precision,
checkpointer, logger), `train_epoch` runs the accumulated steps, `validate_epoch` the host metric; none of them
decides anything about the order of events.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from common.config import dataset_sections, dump_config
from common.config_node import ConfigNode
from common.data.loader import build_loader, set_epoch
from common.data.preflight import require_data
from common.engine import dist
from common.engine.amp import MixedPrecision
from common.engine.checkpoint import Checkpointer, unwrap
from common.engine.dist import DistEnv
from common.engine.log import TrainLogger
from common.engine.lr_schedule import LRSchedule, build_lr_schedule
from common.engine.optim import build_optimizer, total_batch_size
from common.engine.state import TrainState
from common.engine.task import BatchLoader, Task
from common.metrics import LossLogger, Metric

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


def seed_everything(seed: int) -> None:
    if seed < 0:
        return
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def output_layout(cfg: ConfigNode, cfg_name: str) -> tuple[str, str]:
    """The original layout: `{OUTPUT_PATH}/{cfg_name}/{TRAIN_IMAGE_SET}_train/` and the checkpoint prefix in it."""
    image_set = dataset_sections(cfg)[0].TRAIN_IMAGE_SET
    out_dir = os.path.join(cfg.OUTPUT_PATH, cfg_name, f"{image_set}_train")
    return out_dir, os.path.join(out_dir, cfg.MODEL_PREFIX)


def move_to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [move_to_device(v, device) for v in batch]
    return batch


def build_metrics(task: Task, cfg: ConfigNode) -> list[Metric]:
    """Task metrics (the first is the host metric) plus one LossLogger per TRAIN.LOSS_LOGGERS entry."""
    metrics = list(task.build_metrics(cfg))
    for name, display in cfg.TRAIN.LOSS_LOGGERS:
        metrics.append(LossLogger(name, display))
    return metrics


def wrap_module(module: nn.Module, cfg: ConfigNode, env: DistEnv) -> nn.Module:
    """torch.compile when TRAIN.COMPILE, then DDP when world size > 1.

    TRAIN.FIND_UNUSED_PARAMETERS defaults to true because several VL-BERT options leave parameters without
    gradient (an unused pooler, a disabled pretraining head); a config whose every parameter is used may turn it off.
    """
    if bool(cfg.TRAIN.COMPILE):
        if env.device.type == "cpu":
            log.warning("TRAIN.COMPILE on CPU: the compiled model measured slower than eager here (bench/RESULTS.md); "
                        "check with `make bench` before training with it")
        module = torch.compile(module)
    if env.is_distributed:
        device_ids = [env.device.index] if env.device.type == "cuda" else None
        module = nn.parallel.DistributedDataParallel(
            module, device_ids=device_ids, find_unused_parameters=bool(cfg.TRAIN.FIND_UNUSED_PARAMETERS))
    return module


def load_pretrained_weights(task: Task, module: nn.Module, cfg: ConfigNode) -> None:
    """NETWORK.PARTIAL_PRETRAIN with its prefix changes and the task's checkpoint key map (one load), then the
    task's own initialisation (weights only)."""
    path = cfg.NETWORK.PARTIAL_PRETRAIN
    if not path:
        return
    from common.model.pretrained import load_partial_pretrain

    state_dict = load_partial_pretrain(module, path, cfg.NETWORK.PARTIAL_PRETRAIN_PREFIX_CHANGES,
                                       key_map=task.checkpoint_key_map)
    if task.after_load_pretrain is not None:
        task.after_load_pretrain(module, cfg, state_dict)


def train_step(module: nn.Module, micro_batches: list[dict], optimizer: torch.optim.Optimizer, amp: MixedPrecision,
               clip_norm: float, metrics: list[Metric], device: torch.device) -> dict[str, Tensor]:
    """Forward/backward over the micro-batches (all-reduce only on the last), then clip; the caller steps."""
    optimizer.zero_grad(set_to_none=True)
    total_loss = torch.zeros((), device=device)
    for i, batch in enumerate(micro_batches):
        is_last = i == len(micro_batches) - 1
        sync = contextlib.nullcontext() if is_last or not hasattr(module, "no_sync") else module.no_sync()
        with sync:
            with amp.autocast():
                outputs = module(batch)
            loss = outputs["loss"].float() / len(micro_batches)
            amp.backward(loss)
        total_loss += loss.detach()
        for metric in metrics:
            metric.update(outputs, batch)
    grad_norm = amp.unscale_and_clip(optimizer, [p for p in module.parameters() if p.requires_grad], clip_norm)
    return {"loss": total_loss, "grad_norm": grad_norm}


def is_step_finite(stats: dict[str, Tensor], amp: MixedPrecision) -> bool:
    """True unless the loss (or, without a loss scaler, the gradient norm) is inf/NaN on any rank: one host sync."""
    bad = ~torch.isfinite(stats["loss"])
    if amp.scaler is None:
        bad = bad | ~torch.isfinite(stats["grad_norm"])
    return not bool(dist.all_reduce_max(bad.float()).item())


@torch.no_grad()
def evaluate(module: nn.Module, loader: BatchLoader, metrics: list[Metric], amp: MixedPrecision, device: torch.device,
             show_progress: bool = False) -> dict[str, float]:
    """Metrics over this rank's shard (no duplicates), summed over ranks when read."""
    plain = unwrap(module)
    plain.eval()
    for metric in metrics:
        metric.reset()
    for batch in tqdm(loader, desc="val", leave=False, disable=not show_progress):
        batch = move_to_device(batch, device)
        with amp.autocast():
            outputs = plain(batch)
        for metric in metrics:
            metric.update(outputs, batch)
    values = {metric.name: metric.compute() for metric in metrics}
    plain.train()
    return values


def accumulation_steps(cfg: ConfigNode, world_size: int) -> int:
    """GRAD_ACCUMULATE_STEPS, or derived from TRAIN.GLOBAL_BATCH when that is set (> 0)."""
    global_batch = int(cfg.TRAIN.GLOBAL_BATCH)
    if global_batch <= 0:
        return int(cfg.TRAIN.GRAD_ACCUMULATE_STEPS)
    per_step = total_batch_size(cfg, world_size) // int(cfg.TRAIN.GRAD_ACCUMULATE_STEPS)
    if global_batch % per_step:
        raise ValueError(f"TRAIN.GLOBAL_BATCH {global_batch} is not a multiple of "
                         f"world size x BATCH_IMAGES = {per_step}")
    steps = global_batch // per_step
    log.info("TRAIN.GLOBAL_BATCH %d = world size %d x BATCH_IMAGES %s x %d accumulation steps",
             global_batch, world_size, cfg.TRAIN.BATCH_IMAGES, steps)
    return steps


def splits_read(task: Task, cfg: ConfigNode) -> tuple[str, ...]:
    """The config sections a training run reads: TRAIN, VAL when VAL_FREQUENT > 0, TEST when the task has a test
    step (`--do-test`). The pre-flight check looks only at these, so a run without validation needs no val files."""
    splits = ("TRAIN",) + (("VAL",) if int(cfg.VAL_FREQUENT) > 0 else ())
    return splits + (("TEST",) if task.test_after_training is not None else ())


def resolve_config(cfg: ConfigNode, world_size: int) -> ConfigNode:
    """The config the run really uses: accumulation derived from GLOBAL_BATCH written back (frozen copy)."""
    steps = accumulation_steps(cfg, world_size)
    if steps == cfg.TRAIN.GRAD_ACCUMULATE_STEPS:
        return cfg
    resolved = cfg.clone()
    resolved.TRAIN.GRAD_ACCUMULATE_STEPS = steps
    return resolved.freeze()


@dataclass
class Run:
    """Everything one training run is made of, built once by `build_run`; `state` is what changes."""

    cfg: ConfigNode  # as resolved (GLOBAL_BATCH -> GRAD_ACCUMULATE_STEPS)
    env: DistEnv
    out_dir: str
    model: nn.Module  # compiled / DDP-wrapped as configured
    train_loader: BatchLoader
    val_loader: BatchLoader | None
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    amp: MixedPrecision
    checkpointer: Checkpointer
    logger: TrainLogger
    train_metrics: list[Metric]
    val_metrics: list[Metric]
    state: TrainState

    @property
    def accumulate(self) -> int:
        return int(self.cfg.TRAIN.GRAD_ACCUMULATE_STEPS)


def start_weights(task: Task, run: Run, module: nn.Module, seed: int) -> None:
    """Resume from the newest checkpoint when allowed; otherwise NETWORK.PARTIAL_PRETRAIN, then per-rank seeds."""
    train = run.cfg.TRAIN
    resume_from = run.checkpointer.find_resume(bool(train.RESUME), bool(train.AUTO_RESUME), int(train.BEGIN_EPOCH),
                                               int(train.END_EPOCH))
    if resume_from:
        run.checkpointer.restore(resume_from, run.state, module, run.optimizer, run.schedule, run.amp)
        return
    load_pretrained_weights(task, module, run.cfg)
    if seed >= 0:
        seed_everything(seed + run.env.rank)  # dropout and augmentation differ between ranks


def build_run(task: Task, cfg: ConfigNode, env: DistEnv, cfg_name: str, log_dir: str | None) -> Run:
    """Check the data, write the config, build the module, loaders and collaborators, and set the starting weights
    (a resume or the pretrained ones). The order of random draws is part of the contract: runs resume bitwise."""
    cfg = resolve_config(cfg, env.world_size)
    require_data(cfg, task, splits_read(task, cfg))
    out_dir, prefix = output_layout(cfg, cfg_name)
    if env.is_main:
        os.makedirs(out_dir, exist_ok=True)
        dump_config(cfg, os.path.join(out_dir, "config.yaml"))
    seed = int(cfg.RNG_SEED)
    seed_everything(seed)  # equal on every rank: the same initial weights
    module = task.build_module(cfg).to(env.device)
    train_loader = build_loader(task, cfg, "train", env)
    val_loader = build_loader(task, cfg, "val", env) if int(cfg.VAL_FREQUENT) > 0 else None
    steps_per_epoch = math.ceil(len(train_loader) / int(cfg.TRAIN.GRAD_ACCUMULATE_STEPS))
    optimizer = build_optimizer(cfg, module, env.world_size)
    logger = TrainLogger(log_dir or os.path.join(out_dir, "tensorboard_logs"), cfg.LOG_FREQUENT, env.is_main,
                         total_batch_size(cfg, env.world_size), int(cfg.TRAIN.END_EPOCH) * steps_per_epoch)
    run = Run(cfg, env, out_dir, module, train_loader, val_loader, optimizer,
              build_lr_schedule(cfg, optimizer, steps_per_epoch), MixedPrecision.from_config(cfg, env.device),
              Checkpointer(prefix, cfg.CHECKPOINT_FREQUENT, cfg.CHECKPOINT_KEEP, cfg.to_dict()), logger,
              build_metrics(task, cfg), build_metrics(task, cfg), TrainState(epoch=int(cfg.TRAIN.BEGIN_EPOCH)))
    start_weights(task, run, module, seed)
    run.model = wrap_module(module, cfg, env)
    return run


def skip_nonfinite_step(run: Run, micro: list[dict], epoch: int) -> None:
    """Drop this update (gradients cleared, loss scale lowered); stop after TRAIN.MAX_NONFINITE_STEPS in a row."""
    state, max_skips = run.state, int(run.cfg.TRAIN.MAX_NONFINITE_STEPS)
    state.nonfinite_skips += 1
    ids = [int(i) for b in micro for i in torch.as_tensor(b.get("index", [])).view(-1).tolist()]
    log.warning("epoch %d step %d: non-finite loss or gradient; update skipped (samples %s); %d in a row",
                epoch, state.global_step, ids, state.nonfinite_skips)
    run.optimizer.zero_grad(set_to_none=True)
    if run.amp.scaler is not None:
        run.amp.scaler.update()
    if state.nonfinite_skips >= max_skips:
        raise NonFiniteLossError(
            f"stopping: {state.nonfinite_skips} consecutive steps with a non-finite loss or gradient "
            f"(TRAIN.MAX_NONFINITE_STEPS={max_skips}); the last good checkpoint under {run.out_dir} is intact")


def log_train_step(run: Run, epoch: int, batch_index: int, stats: dict[str, Tensor]) -> None:
    """The LOG_FREQUENT line: loss and gradient norm averaged over ranks, the running train metrics, the LRs."""
    values = {"Loss": float(dist.all_reduce_mean(stats["loss"].float()).item())}
    values.update({m.name: m.compute() for m in run.train_metrics})
    values["grad_norm"] = float(dist.all_reduce_mean(stats["grad_norm"].float()).item())
    run.amp.report_skipped()
    run.logger.log_train(epoch, batch_index, run.state.global_step, values, run.schedule.current_lrs())


def optimizer_step(run: Run, micro: list[dict], epoch: int) -> dict[str, Tensor]:
    """One update from the accumulated micro-batches (skipped when non-finite); the schedule advances either way."""
    stats = train_step(run.model, micro, run.optimizer, run.amp, float(run.cfg.TRAIN.CLIP_GRAD_NORM),
                       run.train_metrics, run.env.device)
    if is_step_finite(stats, run.amp):
        run.amp.step(run.optimizer, stats["grad_norm"])
        run.state.nonfinite_skips = 0
    else:
        skip_nonfinite_step(run, micro, epoch)
    run.schedule.step()  # skipped updates count too, so the schedule stays a function of the epoch position
    run.state.global_step += 1
    run.logger.step_done()
    return stats


def train_epoch(run: Run, epoch: int) -> None:
    """Every batch of the epoch, GRAD_ACCUMULATE_STEPS micro-batches per update (the last update may take fewer)."""
    set_epoch(run.train_loader, epoch)
    run.model.train()
    for metric in run.train_metrics:
        metric.reset()
    micro: list[dict] = []
    last = len(run.train_loader) - 1
    progress = tqdm(run.train_loader, desc=f"epoch {epoch}", disable=not run.env.is_main, leave=False)
    for batch_index, batch in enumerate(progress):
        micro.append(move_to_device(batch, run.env.device))
        if len(micro) < run.accumulate and batch_index != last:
            continue
        stats = optimizer_step(run, micro, epoch)
        micro = []
        if run.logger.due(batch_index // run.accumulate):
            log_train_step(run, epoch, batch_index, stats)
    run.logger.log_epoch_train(epoch, {m.name: m.compute() for m in run.train_metrics})  # every rank: a collective


def validate_epoch(run: Run, epoch: int) -> float | None:
    """The host metric after `epoch` when validation is due (every VAL_FREQUENT epochs), else None."""
    if run.val_loader is None or (epoch + 1) % int(run.cfg.VAL_FREQUENT) != 0:
        return None
    values = evaluate(run.model, run.val_loader, run.val_metrics, run.amp, run.env.device,
                      show_progress=run.env.is_main)
    run.logger.log_val(epoch, values)
    return values[run.val_metrics[0].name] if run.val_metrics else None


def fit(task: Task, cfg: ConfigNode, env: DistEnv, cfg_name: str, log_dir: str | None = None) -> TrainState:
    """Train `task` as `cfg` says, resuming from the newest checkpoint when allowed. Returns the final state."""
    run = build_run(task, cfg, env, cfg_name, log_dir)
    for epoch in range(run.state.epoch, int(run.cfg.TRAIN.END_EPOCH)):
        train_epoch(run, epoch)
        score = validate_epoch(run, epoch)
        is_best = run.state.record(epoch, score)
        run.schedule.after_epoch(score)
        run.state.epoch = epoch + 1
        run.checkpointer.save(epoch, is_best, run.state, run.model, run.optimizer, run.schedule, run.amp)
    run.logger.close()
    return run.state
