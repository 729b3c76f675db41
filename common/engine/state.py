"""What a training checkpoint holds: the trainer's bookkeeping (`TrainState`, the data position included) and the one
function that assembles every stateful part of a run into a checkpoint (`checkpoint_state`), with its inverse.

Epoch and step checkpoints are the same dict taken at different times; how it is stored (one file, or shards) is the
checkpointer's business.
"""
from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from common.model.state_dict_io import CheckpointError, load_state_dict_with_report

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """The only mutable training bookkeeping; restored on resume.

    The data position is (`epoch`, `batches_done`): between epochs `batches_done` is 0 and `epoch` the next one to
    run; a step checkpoint taken during epoch e holds e and the batches of e already trained (always a whole number
    of optimizer steps). `layout` records what those batches mean (world size, batches per epoch, batch size, and
    for shard streams the loader workers per process, which deal the streams out).
    """

    epoch: int = 0  # the epoch being trained, or the next one between epochs
    global_step: int = 0  # optimizer updates so far (skipped non-finite ones included)
    best_epoch: int = -1
    best_val: float = float("-inf")
    nonfinite_skips: int = 0  # consecutive updates skipped for a non-finite loss
    batches_done: int = 0  # batches of `epoch` already trained
    best_step: int = -1  # global step of the best validation
    layout: dict = field(default_factory=dict)

    def record(self, epoch: int, score: float | None, step: int | None = None) -> bool:
        """Track the best host metric (higher is better, as the original's ValidationMonitor); True on a new best."""
        if score is None or score <= self.best_val:
            return False
        self.best_epoch, self.best_val = epoch, float(score)
        self.best_step = self.global_step if step is None else int(step)
        return True

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        """Take the saved values; a mid-epoch position saved under another layout is carried over proportionally
        (the rest of that epoch is then approximate: a few samples may be seen twice or not at all)."""
        layout = self.layout
        for key, value in state.items():
            if hasattr(self, key):
                setattr(self, key, value)
        saved, self.layout = self.layout, layout
        # keys both record (a checkpoint written before `loader_workers` was recorded is compared on the rest)
        changed = [key for key in saved.keys() & layout.keys() if saved[key] != layout[key]] if saved else []
        if self.batches_done and changed:
            done = min(round(self.batches_done * layout["batches_per_epoch"] / max(saved["batches_per_epoch"], 1)),
                       layout["batches_per_epoch"])
            log.warning("resuming epoch %d part-way under another data layout (saved %s, now %s): starting at batch "
                        "%d of %d instead of %d of %d; the rest of this epoch is not the uninterrupted run's",
                        self.epoch, saved, layout, done, layout["batches_per_epoch"], self.batches_done,
                        saved["batches_per_epoch"])
            self.batches_done = done


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            module = module.module
        elif isinstance(getattr(module, "_orig_mod", None), nn.Module):
            module = module._orig_mod
        else:
            return module


def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) generator states as tensors/lists, loadable with weights_only=True."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]) + [random.getstate()[2] if random.getstate()[2] is not None else -1],
        "python_version": random.getstate()[0],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), np_state[2], np_state[3], np_state[4]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    python = state["python"]
    gauss = None if python[-1] == -1 else python[-1]
    random.setstate((state["python_version"], tuple(int(v) for v in python[:-1]), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainingParts:
    """The stateful parts of a run (what torchtitan calls its Stateful objects); `module` may be wrapped."""

    state: TrainState
    module: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Any  # common.engine.lr_schedule.LRSchedule
    amp: Any  # common.engine.amp.MixedPrecision


def checkpoint_state(parts: TrainingParts, rng_per_rank: list[dict], config: dict) -> dict:
    """Everything a checkpoint holds, in the file keys of the original (`state_dict`, `validation_monitor`) plus
    ours. `rng_per_rank` holds one `rng_state()` per rank: dropout streams differ between ranks."""
    state = parts.state
    return {
        "state_dict": unwrap(parts.module).state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.schedule.state_dict(),
        "scaler": parts.amp.state_dict(),
        "train_state": state.state_dict(),
        "rng": rng_per_rank,
        "validation_monitor": {"best_epoch": state.best_epoch, "best_val": state.best_val},
        "config": config,
    }


def restore_checkpoint_state(ckpt: dict, parts: TrainingParts, source: str, rank: int, world_size: int) -> bool:
    """Put a `checkpoint_state` dict back into `parts` (and this rank's generators). Errors name `source`.
    Returns False when the dict has no `train_state` (an original VL-BERT checkpoint): the caller sets the epoch."""
    load_state_dict_with_report(unwrap(parts.module), strip_module_prefix(ckpt["state_dict"]), source,
                                allow_missing=False, allow_unexpected=False)
    try:
        parts.optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"{source}: its optimizer state does not fit this run's optimizer (TRAIN.OPTIMIZER or "
                              f"the trained parameters differ): {err}") from err
    if ckpt.get("scheduler"):
        parts.schedule.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler"):
        parts.amp.load_state_dict(ckpt["scaler"])
    known = bool(ckpt.get("train_state"))
    if known:
        parts.state.load_state_dict(ckpt["train_state"])
    else:
        monitor = ckpt.get("validation_monitor") or {}
        parts.state.best_epoch = monitor.get("best_epoch", -1)
        parts.state.best_val = monitor.get("best_val", float("-inf"))
    _restore_rng(ckpt.get("rng"), source, rank, world_size)
    return known


def _restore_rng(rng: Any, source: str, rank: int, world_size: int) -> None:
    if isinstance(rng, dict):  # a single state (older files of this codebase)
        rng = [rng]
    if rng and len(rng) == world_size:
        set_rng_state(rng[rank])
    elif rng:
        log.warning("%s holds RNG states of %d rank(s) but this run has %d: generators not restored, so the run "
                    "continues correctly but not bit-identically", source, len(rng), world_size)


def strip_module_prefix(state_dict: dict) -> dict:
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)
