"""Training checkpoints in the original layout: `{prefix}-{epoch:04d}.model` and `{prefix}-best.model`.

A file holds `state_dict` (module keys without `module.`; loaders accept both), `optimizer`, `scheduler`, `scaler`,
`train_state`, `rng`, `validation_monitor` (as the original) and `config`. Files are written to a temporary name in
the same folder and renamed, so a crash never leaves a half-written checkpoint under the real name. Everything is
read back with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import glob
import logging
import os
import random
import re

import numpy as np
import torch
from torch import nn

from common.engine import dist
from common.engine.state import TrainState

log = logging.getLogger(__name__)

EPOCH_FILE = re.compile(r"-(\d{4})\.model$")


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


def save_atomic(obj: dict, path: str) -> None:
    """torch.save to a temporary file in the same folder, then rename over `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path: str) -> dict:
    """Read a training checkpoint safely; errors name the file."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise ValueError(f"{path}: not a training checkpoint (expected a dict with 'state_dict')")
    return obj


class Checkpointer:
    """Saves and finds checkpoints under `{prefix}-*.model`; rank 0 writes, every rank reads the same file."""

    def __init__(self, prefix: str, frequency: int = 1, keep: int = 0, config: dict | None = None):
        self.prefix, self.frequency, self.keep, self.config = prefix, max(int(frequency), 1), int(keep), config or {}
        # TRAIN.DATA_PARALLEL zero1 / fsdp or TRAIN.CHECKPOINT_FORMAT dcp: save, find_resume and restore are handed
        # to common/engine/dcp_checkpoint.py (None for ddp with .model files: the code below)
        from common.engine.dcp_checkpoint import sharded_checkpointing

        self.sharded = sharded_checkpointing(self)

    def epoch_path(self, epoch: int) -> str:
        return f"{self.prefix}-{epoch:04d}.model"

    @property
    def best_path(self) -> str:
        return f"{self.prefix}-best.model"

    def payload(self, state: TrainState, module, optimizer, schedule, amp, rng_per_rank: list[dict]) -> dict:
        return {
            "state_dict": unwrap(module).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": schedule.state_dict(),
            "scaler": amp.state_dict(),
            "train_state": state.state_dict(),
            "rng": rng_per_rank,  # one entry per rank: dropout/augmentation streams differ between ranks
            "validation_monitor": {"best_epoch": state.best_epoch, "best_val": state.best_val},
            "config": self.config,
        }

    def save(self, epoch: int, is_best: bool, state: TrainState, module, optimizer, schedule, amp) -> None:
        """At the end of `epoch` (0-based): the epoch file when due, the best file when the host metric improved."""
        if self.sharded is not None:
            return self.sharded.save(epoch, is_best, state, module, optimizer, schedule, amp)
        due = (epoch + 1) % self.frequency == 0
        rng_per_rank = dist.all_gather_object(rng_state()) if due or is_best else []
        if dist.rank() == 0 and (due or is_best):
            payload = self.payload(state, module, optimizer, schedule, amp, rng_per_rank)
            if due:
                save_atomic(payload, self.epoch_path(epoch))
                log.info("saved %s", self.epoch_path(epoch))
                self._prune()
            if is_best:
                save_atomic(payload, self.best_path)
                log.info("saved %s (best %s so far: %.4f)", self.best_path, "host metric", state.best_val)
        dist.barrier()

    def _prune(self) -> None:
        if self.keep <= 0:
            return
        for path in self.epoch_files()[:-self.keep]:
            os.remove(path)

    def epoch_files(self) -> list[str]:
        """Epoch checkpoint files of this prefix, oldest first."""
        files = [p for p in glob.glob(f"{glob.escape(self.prefix)}-*.model") if EPOCH_FILE.search(p)]
        return sorted(files, key=lambda p: int(EPOCH_FILE.search(p).group(1)))

    def find_resume(self, resume: bool, auto_resume: bool, begin_epoch: int, end_epoch: int) -> str | None:
        """The file to resume from (decided on rank 0, broadcast): RESUME = epoch BEGIN_EPOCH-1; AUTO_RESUME = the
        newest loadable epoch file (a corrupt newest one is reported by name and the one before is used)."""
        if self.sharded is not None:
            return self.sharded.find_resume(resume, auto_resume, begin_epoch, end_epoch)
        choice = None
        if dist.rank() == 0:
            if resume:
                path = self.epoch_path(begin_epoch - 1)
                if not os.path.isfile(path):
                    raise FileNotFoundError(f"TRAIN.RESUME: {path} does not exist (BEGIN_EPOCH={begin_epoch})")
                choice = path
            elif auto_resume:
                for path in reversed(self.epoch_files()):
                    epoch = int(EPOCH_FILE.search(path).group(1))
                    if epoch >= end_epoch:
                        continue
                    try:
                        load_checkpoint(path)
                    except ValueError as err:
                        log.error("AUTO_RESUME: skipping unreadable checkpoint %s (%s)", path, err)
                        continue
                    choice = path
                    break
        return dist.broadcast_object(choice)

    def restore(self, path: str, state: TrainState, module, optimizer, schedule, amp) -> None:
        """Load everything a resume needs from `path` (every rank reads the same file)."""
        if self.sharded is not None:
            return self.sharded.restore(path, state, module, optimizer, schedule, amp)
        ckpt = load_checkpoint(path)
        unwrap(module).load_state_dict(strip_module_prefix(ckpt["state_dict"]))
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scheduler"):
            schedule.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            amp.load_state_dict(ckpt["scaler"])
        if ckpt.get("train_state"):
            state.load_state_dict(ckpt["train_state"])
        else:  # an original checkpoint: only the epoch is known from the file name
            state.epoch = int(EPOCH_FILE.search(path).group(1)) + 1
            monitor = ckpt.get("validation_monitor") or {}
            state.best_epoch, state.best_val = monitor.get("best_epoch", -1), monitor.get("best_val", float("-inf"))
        rng = ckpt.get("rng")
        if isinstance(rng, dict):  # a single state (older files of this codebase)
            rng = [rng]
        if rng and len(rng) == dist.world_size():
            set_rng_state(rng[dist.rank()])
        elif rng:
            log.warning("%s holds RNG states of %d rank(s) but this run has %d: generators not restored, so the "
                        "run continues correctly but not bit-identically", path, len(rng), dist.world_size())
        log.info("resumed from %s: next epoch %d, global step %d", path, state.epoch, state.global_step)


def strip_module_prefix(state_dict: dict) -> dict:
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)
