"""The training loop shared by every task: build, resume, then epochs of accumulated steps, validation, checkpoints.

Read `fit` top to bottom; each collaborator (optimizer, schedule, mixed precision, checkpointer, logger) is built
by its own function and decides nothing about the order of events.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import random
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from common.config import dataset_sections, dump_config
from common.data.loader import build_loader, set_epoch
from common.data.preflight import require_data
from common.engine import dist
from common.engine.amp import MixedPrecision
from common.engine.checkpoint import Checkpointer, unwrap
from common.engine.log import TrainLogger
from common.engine.lr_schedule import build_lr_schedule
from common.engine.optim import build_optimizer, total_batch_size
from common.engine.state import TrainState
from common.metrics import LossLogger

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


def seed_everything(seed: int) -> None:
    if seed < 0:
        return
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def output_layout(cfg: Any, cfg_name: str) -> tuple[str, str]:
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


def build_metrics(task: Any, cfg: Any) -> list:
    """Task metrics (the first is the host metric) plus one LossLogger per TRAIN.LOSS_LOGGERS entry."""
    metrics = list(task.build_metrics(cfg))
    for name, display in cfg.TRAIN.get("LOSS_LOGGERS", ()):
        metrics.append(LossLogger(name, display))
    return metrics


def wrap_module(module: nn.Module, cfg: Any, env: Any, find_unused_parameters: bool = True) -> nn.Module:
    """torch.compile when TRAIN.COMPILE, then DDP when world size > 1.

    find_unused_parameters defaults to True because several VL-BERT options leave parameters without gradient
    (an unused pooler, a disabled pretraining head); a task whose every parameter is used may turn it off.
    """
    if bool(cfg.TRAIN.get("COMPILE", False)):
        if env.device.type == "cpu":
            log.warning("TRAIN.COMPILE on CPU: the compiled model measured slower than eager (9.4 -> 5.3 samples/s, "
                        "bench/RESULTS.md), as inductor replaces the oneDNN linears with MKL")
        module = torch.compile(module)
    if env.is_distributed:
        device_ids = [env.device.index] if env.device.type == "cuda" else None
        module = nn.parallel.DistributedDataParallel(module, device_ids=device_ids,
                                                     find_unused_parameters=find_unused_parameters)
    return module


def load_pretrained_weights(task: Any, module: nn.Module, cfg: Any) -> None:
    """NETWORK.PARTIAL_PRETRAIN with its prefix changes, then the task's own initialisation (weights only)."""
    path = cfg.NETWORK.PARTIAL_PRETRAIN
    if not path:
        return
    from common.model.pretrained import load_partial_pretrain

    state_dict = load_partial_pretrain(module, path, cfg.NETWORK.PARTIAL_PRETRAIN_PREFIX_CHANGES)
    if task.after_load_pretrain is not None:
        task.after_load_pretrain(module, cfg, state_dict)


def train_step(module: nn.Module, micro_batches: list[dict], optimizer, amp: MixedPrecision, clip_norm: float,
               metrics: list, device: torch.device) -> dict[str, Tensor]:
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
def evaluate(module: nn.Module, loader: Any, metrics: list, amp: MixedPrecision, device: torch.device,
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


def accumulation_steps(cfg: Any, world_size: int) -> int:
    """GRAD_ACCUMULATE_STEPS, or derived from TRAIN.GLOBAL_BATCH when that is set (> 0)."""
    global_batch = int(cfg.TRAIN.get("GLOBAL_BATCH", 0))
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


def splits_read(task: Any, cfg: Any) -> tuple[str, ...]:
    """The config sections a training run reads: TRAIN, VAL when VAL_FREQUENT > 0, TEST when the task has a test
    step (`--do-test`). The pre-flight check looks only at these, so a run without validation needs no val files."""
    splits = ("TRAIN",) + (("VAL",) if int(cfg.VAL_FREQUENT) > 0 else ())
    return splits + (("TEST",) if (task.extra or {}).get("test") is not None else ())


def resolve_config(cfg: Any, world_size: int) -> Any:
    """The config the run really uses: accumulation derived from GLOBAL_BATCH written back (frozen copy)."""
    steps = accumulation_steps(cfg, world_size)
    if steps == cfg.TRAIN.GRAD_ACCUMULATE_STEPS:
        return cfg
    resolved = cfg.clone()
    resolved.TRAIN.GRAD_ACCUMULATE_STEPS = steps
    return resolved.freeze()


def fit(task: Any, cfg: Any, env: Any, cfg_name: str, log_dir: str | None = None) -> TrainState:  # noqa: C901, PLR0915
    """Train `task` as `cfg` says, resuming from the newest checkpoint when allowed. Returns the final state."""
    cfg = resolve_config(cfg, env.world_size)
    require_data(cfg, task.name, splits_read(task, cfg))
    out_dir, prefix = output_layout(cfg, cfg_name)
    if env.is_main:
        os.makedirs(out_dir, exist_ok=True)
        dump_config(cfg, os.path.join(out_dir, "config.yaml"))
    seed = int(cfg.RNG_SEED)
    seed_everything(seed)  # equal on every rank: the same initial weights
    module = task.build_module(cfg).to(env.device)
    train_loader = build_loader(task, cfg, "train", env)
    val_loader = build_loader(task, cfg, "val", env) if int(cfg.VAL_FREQUENT) > 0 else None
    accumulate = int(cfg.TRAIN.GRAD_ACCUMULATE_STEPS)
    steps_per_epoch = math.ceil(len(train_loader) / accumulate)
    optimizer = build_optimizer(cfg, module, env.world_size)
    schedule = build_lr_schedule(cfg, optimizer, steps_per_epoch)
    amp = MixedPrecision.from_config(cfg, env.device)
    checkpointer = Checkpointer(prefix, cfg.CHECKPOINT_FREQUENT, cfg.get("CHECKPOINT_KEEP", 0), cfg.to_dict())
    state = TrainState(epoch=int(cfg.TRAIN.BEGIN_EPOCH))
    resume_from = checkpointer.find_resume(bool(cfg.TRAIN.RESUME), bool(cfg.TRAIN.AUTO_RESUME),
                                           int(cfg.TRAIN.BEGIN_EPOCH), int(cfg.TRAIN.END_EPOCH))
    if resume_from:
        checkpointer.restore(resume_from, state, module, optimizer, schedule, amp)
    else:
        load_pretrained_weights(task, module, cfg)
        if seed >= 0:
            seed_everything(seed + env.rank)  # dropout and augmentation differ between ranks
    find_unused = cfg.TRAIN.get("FIND_UNUSED_PARAMETERS", (task.extra or {}).get("find_unused_parameters", True))
    model = wrap_module(module, cfg, env, bool(find_unused))
    train_metrics, val_metrics = build_metrics(task, cfg), build_metrics(task, cfg)
    samples_per_step = total_batch_size(cfg, env.world_size)
    logger = TrainLogger(log_dir or os.path.join(out_dir, "tensorboard_logs"), cfg.LOG_FREQUENT, env.is_main,
                         samples_per_step, int(cfg.TRAIN.END_EPOCH) * steps_per_epoch)
    max_skips = int(cfg.TRAIN.get("MAX_NONFINITE_STEPS", 3))
    clip = float(cfg.TRAIN.CLIP_GRAD_NORM)

    for epoch in range(state.epoch, int(cfg.TRAIN.END_EPOCH)):
        set_epoch(train_loader, epoch)
        model.train()
        for metric in train_metrics:
            metric.reset()
        micro: list[dict] = []
        progress = tqdm(train_loader, desc=f"epoch {epoch}", disable=not env.is_main, leave=False)
        for batch_index, batch in enumerate(progress):
            micro.append(move_to_device(batch, env.device))
            if len(micro) < accumulate and batch_index != len(train_loader) - 1:
                continue
            stats = train_step(model, micro, optimizer, amp, clip, train_metrics, env.device)
            if is_step_finite(stats, amp):
                amp.step(optimizer, stats["grad_norm"])
                state.nonfinite_skips = 0
            else:
                state.nonfinite_skips += 1
                ids = [int(i) for b in micro for i in torch.as_tensor(b.get("index", [])).view(-1).tolist()]
                log.warning("epoch %d step %d: non-finite loss or gradient; update skipped (samples %s); %d in a row",
                            epoch, state.global_step, ids, state.nonfinite_skips)
                optimizer.zero_grad(set_to_none=True)
                if amp.scaler is not None:
                    amp.scaler.update()
                if state.nonfinite_skips >= max_skips:
                    raise NonFiniteLossError(
                        f"stopping: {state.nonfinite_skips} consecutive steps with a non-finite loss or gradient "
                        f"(TRAIN.MAX_NONFINITE_STEPS={max_skips}); the last good checkpoint under {out_dir} is intact")
            micro = []
            schedule.step()  # skipped updates count too, so the schedule stays a function of the epoch position
            state.global_step += 1
            logger.step_done()
            if logger.due(batch_index // accumulate):
                values = {"Loss": float(dist.all_reduce_mean(stats["loss"].float()).item())}
                values.update({m.name: m.compute() for m in train_metrics})
                values["grad_norm"] = float(dist.all_reduce_mean(stats["grad_norm"].float()).item())
                amp.report_skipped()
                logger.log_train(epoch, batch_index, state.global_step, values, schedule.current_lrs())
        logger.log_epoch_train(epoch, {m.name: m.compute() for m in train_metrics})  # every rank: a collective
        score = None
        if val_loader is not None and (epoch + 1) % int(cfg.VAL_FREQUENT) == 0:
            values = evaluate(model, val_loader, val_metrics, amp, env.device, show_progress=env.is_main)
            logger.log_val(epoch, values)
            score = values[val_metrics[0].name] if val_metrics else None
        is_best = state.record(epoch, score)
        schedule.after_epoch(score)
        state.epoch = epoch + 1
        checkpointer.save(epoch, is_best, state, model, optimizer, schedule, amp)
    logger.close()
    return state
