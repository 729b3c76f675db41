"""Building a training run: the config the run really uses, the pre-flight check, the module and its starting
weights (a resume, or NETWORK.PARTIAL_PRETRAIN through the task's key map), the loaders and every collaborator of the
loop, gathered in one `Run`. `common/engine/trainer.py` runs it.
"""
from __future__ import annotations

import logging
import math
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from common.config import dataset_sections, dump_config
from common.config_node import ConfigNode
from common.data.loader import build_loader, epoch_batches
from common.data.preflight import require_data
from common.data.streaming import ShardBatches
from common.engine.amp import MixedPrecision
from common.engine.checkpoint import Checkpointer
from common.engine.dist import DistEnv
from common.engine.gpu_path import apply_gpu_path
from common.engine.log import TrainLogger, build_train_logger
from common.engine.lr_schedule import LRSchedule, build_lr_schedule
from common.engine.nonfinite import loader_datasets
from common.engine.optim import build_optimizer, total_batch_size
from common.engine.parallel import shard_module, wrap_data_parallel
from common.engine.state import TrainingParts, TrainState
from common.engine.task import BatchLoader, Task
from common.metrics import LossLogger, Metric

log = logging.getLogger(__name__)


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


def build_metrics(task: Task, cfg: ConfigNode) -> list[Metric]:
    """Task metrics (the first is the host metric) plus one LossLogger per TRAIN.LOSS_LOGGERS entry."""
    metrics = list(task.build_metrics(cfg))
    for name, display in cfg.TRAIN.LOSS_LOGGERS:
        metrics.append(LossLogger(name, display))
    return metrics


def wrap_module(module: nn.Module, cfg: ConfigNode, env: DistEnv, loader: BatchLoader | None = None) -> nn.Module:
    """torch.compile when TRAIN.COMPILE, then, with world size > 1, the data parallelism of TRAIN.DATA_PARALLEL
    (`common/engine/parallel.py`): DDP for ddp / zero1, whose find_unused_parameters TRAIN.FIND_UNUSED_PARAMETERS
    sets ("auto": one dry step on `loader`'s first samples); fsdp modules were sharded by `shard_module` already.
    """
    if bool(cfg.TRAIN.COMPILE):
        if env.device.type == "cpu":
            log.warning("TRAIN.COMPILE on CPU: the compiled model measured slower than eager here (bench/RESULTS.md); "
                        "check with `make bench` before training with it")
        module = torch.compile(module)
    return wrap_data_parallel(module, cfg, env, loader)


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


def validates(cfg: ConfigNode) -> bool:
    """Whether the run validates at all: every VAL_FREQUENT epochs and/or every TRAIN.VAL_EVERY_STEPS updates."""
    return int(cfg.VAL_FREQUENT) > 0 or int(cfg.TRAIN.VAL_EVERY_STEPS) > 0


def splits_read(task: Task, cfg: ConfigNode) -> tuple[str, ...]:
    """The config sections a training run reads: TRAIN, VAL when it validates, TEST when the task has a test
    step (`--do-test`). The pre-flight check looks only at these, so a run without validation needs no val files."""
    splits = ("TRAIN",) + (("VAL",) if validates(cfg) else ())
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

    @property
    def parts(self) -> TrainingParts:
        """What a checkpoint of this run holds (common/engine/state.py::checkpoint_state)."""
        return TrainingParts(self.state, self.model, self.optimizer, self.schedule, self.amp)


def build_checkpointer(cfg: ConfigNode, prefix: str) -> Checkpointer:
    train = cfg.TRAIN
    return Checkpointer(prefix, cfg.CHECKPOINT_FREQUENT, cfg.CHECKPOINT_KEEP, cfg.to_dict(),
                        every_steps=int(train.CHECKPOINT_EVERY_STEPS), keep_last=int(train.KEEP_LAST))


def find_resume(checkpointer: Checkpointer, cfg: ConfigNode) -> str | None:
    """The checkpoint this run resumes from (RESUME / AUTO_RESUME), checked to be this experiment's."""
    train = cfg.TRAIN
    return checkpointer.find_resume(bool(train.RESUME), bool(train.AUTO_RESUME), int(train.BEGIN_EPOCH),
                                    int(train.END_EPOCH))


def start_weights(task: Task, module: nn.Module, resume_from: str | None, cfg: ConfigNode, env: DistEnv) -> None:
    """Without a checkpoint to resume from: NETWORK.PARTIAL_PRETRAIN into the whole module (before any sharding),
    then per-rank seeds. A resume is restored later, once the optimizer holds the (sharded) parameters."""
    if resume_from:
        return
    load_pretrained_weights(task, module, cfg)
    seed = int(cfg.RNG_SEED)
    if seed >= 0:
        seed_everything(seed + env.rank)  # dropout and augmentation differ between ranks


def data_layout(cfg: ConfigNode, loader: BatchLoader, env: DistEnv) -> dict:
    """What a data position (batches done in an epoch) means: saved with it, compared on resume."""
    batch = cfg.TRAIN.BATCH_IMAGES
    batch = [int(b) for b in batch] if isinstance(batch, (list, tuple)) else int(batch)
    layout = {"world_size": env.world_size, "batches_per_epoch": epoch_batches(loader), "batch_size": batch}
    if any(isinstance(dataset, ShardBatches) for _, dataset in loader_datasets(loader)):
        layout["loader_workers"] = int(cfg.NUM_WORKERS_PER_GPU)  # shard streams are dealt out per worker
    return layout


def write_run_files(cfg: ConfigNode, env: DistEnv, out_dir: str) -> None:
    """The config the run uses, beside its checkpoints (rank 0), once the resume check has passed."""
    if env.is_main:
        os.makedirs(out_dir, exist_ok=True)
        dump_config(cfg, os.path.join(out_dir, "config.yaml"))


def build_run(task: Task, cfg: ConfigNode, env: DistEnv, cfg_name: str, log_dir: str | None) -> Run:
    """Check the data, find the checkpoint to resume from (refused if another experiment wrote it: nothing is
    written before that check), build the module, loaders and collaborators, set the starting weights (a resume or
    the pretrained ones), then write the config. The order of random draws is part of the contract: runs resume
    bitwise."""
    cfg = resolve_config(cfg, env.world_size)
    require_data(cfg, task, splits_read(task, cfg))
    out_dir, prefix = output_layout(cfg, cfg_name)
    checkpointer = build_checkpointer(cfg, prefix)
    resume_from = find_resume(checkpointer, cfg)
    seed_everything(int(cfg.RNG_SEED))  # equal on every rank: the same initial weights
    module = task.build_module(cfg).to(env.device)
    train_loader = build_loader(task, cfg, "train", env)
    val_loader = build_loader(task, cfg, "val", env) if validates(cfg) else None
    steps_per_epoch = math.ceil(epoch_batches(train_loader) / int(cfg.TRAIN.GRAD_ACCUMULATE_STEPS))
    start_weights(task, module, resume_from, cfg, env)
    apply_gpu_path(module, cfg, env.device)  # TRAIN.PAD_TO_MULTIPLE_OF, TRAIN.COMPILE_LAYERS (no random draw)
    shard_module(module, cfg, env)  # TRAIN.DATA_PARALLEL fsdp: the optimizer must hold the shards
    optimizer = build_optimizer(cfg, module, env.world_size)
    state = TrainState(epoch=int(cfg.TRAIN.BEGIN_EPOCH), layout=data_layout(cfg, train_loader, env))
    parts = TrainingParts(state, module, optimizer, build_lr_schedule(cfg, optimizer, steps_per_epoch),
                          MixedPrecision.from_config(cfg, env.device))
    if resume_from:
        checkpointer.restore(resume_from, parts)
    write_run_files(cfg, env, out_dir)
    # observability: speed line, metrics.jsonl, TRAIN.REPORT_TO sinks (common/engine/log.py); no random draw, and
    # after the resume check: nothing is written into another experiment's folder
    logger = build_train_logger(cfg, env, out_dir, log_dir, cfg_name, module, total_batch_size(cfg, env.world_size),
                                int(cfg.TRAIN.END_EPOCH) * steps_per_epoch)
    run = Run(cfg, env, out_dir, module, train_loader, val_loader, optimizer, parts.schedule, parts.amp,
              checkpointer, logger, build_metrics(task, cfg), build_metrics(task, cfg), state)
    run.model = wrap_module(module, cfg, env, train_loader)
    return run
