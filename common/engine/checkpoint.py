"""Training checkpoints: epoch files in the original layout, `{prefix}-{epoch:04d}.model` and `{prefix}-best.model`,
and step files in a `steps/` folder beside them, `steps/{name}-e{epoch:04d}-s{global step:08d}.model`
(TRAIN.CHECKPOINT_EVERY_STEPS; the original's tools, which look for `{prefix}-*.model`, never see them).

Every file holds the same `checkpoint_state` dict (common/engine/state.py): `state_dict` (module keys without
`module.`; loaders accept both), `optimizer`, `scheduler`, `scaler`, `train_state` (with the data position), `rng`
(one entry per rank), `validation_monitor` (as the original) and `config`. Files are written atomically
(`save_atomic`; temporary-file names and their clean-up in common/engine/checkpoint_io.py) and read back with
`torch.load(weights_only=True)`. `Checkpointer.write` and `.read` are the only places that know the file format.
Sharded runs (TRAIN.DATA_PARALLEL zero1 / fsdp) and DCP folders (TRAIN.CHECKPOINT_FORMAT dcp) hand save, find_resume
and restore over to common/engine/dcp_checkpoint.py (epoch, step and best checkpoints, as folders under dcp).
"""
from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Callable

import torch

from common.engine import dist
from common.engine.checkpoint_io import (
    CheckpointWriteError,
    load_checkpoint,
    remove_stale_temp_files,
    temp_path,
)
from common.engine.resume_check import check_same_experiment
from common.engine.state import (  # noqa: F401 - unwrap, rng_state, ... are imported from here by older code
    TrainingParts,
    checkpoint_state,
    restore_checkpoint_state,
    rng_state,
    set_rng_state,
    strip_module_prefix,
    unwrap,
)

log = logging.getLogger(__name__)

EPOCH_FILE = re.compile(r"-(\d{4})\.model$")
STEP_FILE = re.compile(r"-e(\d{4})-s(\d{8,})\.model$")
STEPS_FOLDER = "steps"


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (a crash of the machine right after it keeps the new file)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a folder; the rename is then as durable as they make it
        pass
    finally:
        os.close(fd)


def save_atomic(obj: dict, path: str) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`.

    Any failure (a full disk ends inside torch.save as `RuntimeError: ... unexpected pos ...`) removes the
    temporary file and raises CheckpointWriteError naming `path`; a file already at `path` is untouched.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        raise CheckpointWriteError(f"{path}: could not be written ({type(err).__name__}: {err}); is the disk "
                                   f"full? The temporary file {os.path.basename(tmp)} was removed") from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync_folder(folder)


def position(path: str) -> tuple[int, int]:
    """Where a checkpoint file stands in training, from its name: (next epoch, global step) for a step file of that
    epoch, (epoch + 1, 0) for an epoch file; sorting by it puts the newest last."""
    step = STEP_FILE.search(path)
    if step and os.path.basename(os.path.dirname(path)) == STEPS_FOLDER:
        return int(step.group(1)), int(step.group(2))
    return int(EPOCH_FILE.search(path).group(1)) + 1, 0


def before_end(path: str, end_epoch: int) -> bool:
    """Whether a file lies within a run that stops before `end_epoch` (a file of a longer run is not resumed)."""
    next_epoch, step = position(path)
    return next_epoch < end_epoch if step else next_epoch <= end_epoch


class Checkpointer:
    """Saves and finds the checkpoints of one prefix; rank 0 writes and chooses, every rank reads the same file."""

    def __init__(self, prefix: str, frequency: int = 1, keep: int = 0, config: dict | None = None,
                 every_steps: int = 0, keep_last: int = 0):
        self.prefix, self.frequency, self.keep, self.config = prefix, max(int(frequency), 1), int(keep), config or {}
        self.every_steps, self.keep_last = max(int(every_steps), 0), max(int(keep_last), 0)
        self._read_ahead: tuple[str, dict] | None = None  # the file find_resume read on rank 0, for restore
        # TRAIN.DATA_PARALLEL zero1 / fsdp or TRAIN.CHECKPOINT_FORMAT dcp: save, find_resume and restore are handed
        # to common/engine/dcp_checkpoint.py (None for ddp with .model files: the code below)
        from common.engine.dcp_checkpoint import sharded_checkpointing

        self.sharded = sharded_checkpointing(self)

    # ----- names -------------------------------------------------------------------------------------------------
    def epoch_path(self, epoch: int) -> str:
        return f"{self.prefix}-{epoch:04d}.model"

    @property
    def best_path(self) -> str:
        return f"{self.prefix}-best.model"

    @property
    def steps_folder(self) -> str:
        return os.path.join(os.path.dirname(self.prefix), STEPS_FOLDER)

    def step_path(self, epoch: int, global_step: int) -> str:
        return os.path.join(self.steps_folder, f"{os.path.basename(self.prefix)}-e{epoch:04d}-s{global_step:08d}.model")

    def epoch_files(self) -> list[str]:
        """Epoch checkpoint files of this prefix, oldest first."""
        files = [p for p in glob.glob(f"{glob.escape(self.prefix)}-*.model") if EPOCH_FILE.search(p)]
        return sorted(files, key=position)

    def step_files(self) -> list[str]:
        """Step checkpoint files of this prefix, oldest first."""
        pattern = os.path.join(glob.escape(self.steps_folder), f"{glob.escape(os.path.basename(self.prefix))}-e*.model")
        return sorted((p for p in glob.glob(pattern) if STEP_FILE.search(p)), key=position)

    def newest(self) -> str | None:
        if self.sharded is not None:
            entries = self.sharded.resumable(2**31)
            return entries[0] if entries else None
        files = sorted(self.epoch_files() + self.step_files(), key=position)
        return files[-1] if files else None

    def describe_newest(self) -> str:
        """For error messages: which checkpoint a restart would resume from."""
        newest = self.newest()
        if newest is None:
            return f"no checkpoint of this run exists yet (none under {os.path.dirname(os.path.abspath(self.prefix))})"
        return f"the newest checkpoint, {newest}, is intact"

    # ----- the file format ---------------------------------------------------------------------------------------
    def write(self, payload: dict, path: str) -> None:
        save_atomic(payload, path)

    def read(self, path: str) -> dict:
        return load_checkpoint(path)

    # ----- saving ------------------------------------------------------------------------------------------------
    def step_due(self, global_step: int) -> bool:
        return self.every_steps > 0 and global_step % self.every_steps == 0

    def epoch_due(self, epoch: int) -> bool:
        return (epoch + 1) % self.frequency == 0

    def save(self, epoch: int, is_best: bool, parts: TrainingParts) -> None:
        """At the end of `epoch` (0-based): the epoch file when due, the best file when the host metric improved."""
        if self.sharded is not None:
            return self.sharded.save(epoch, is_best, parts, self.epoch_due(epoch))
        paths = [self.epoch_path(epoch)] if self.epoch_due(epoch) else []
        self._save(parts, paths, is_best, self._prune_epoch_files)

    def save_step(self, parts: TrainingParts, step_file: bool, is_best: bool) -> None:
        """After an optimizer step: the step file (when `step_file`), the best file when an in-loop validation
        improved the host metric."""
        if self.sharded is not None:
            if step_file or is_best:
                self.sharded.save(parts.state.epoch, is_best, parts, False, step_file)
            return None
        paths = [self.step_path(parts.state.epoch, parts.state.global_step)] if step_file else []
        self._save(parts, paths, is_best, self._prune_step_files)

    def _save(self, parts: TrainingParts, paths: list[str], is_best: bool, prune: Callable[[], None]) -> None:
        """A collective: every rank's generator states are gathered, rank 0 writes while the others wait under the
        checkpoint I/O timeout, and a failure on rank 0 stops every rank."""
        if not paths and not is_best:
            return
        rng_per_rank = dist.all_gather_object(rng_state())
        dist.io_on_rank0(lambda: self._write_files(checkpoint_state(parts, rng_per_rank, self.config), paths,
                                                   is_best, prune))

    def _write_files(self, payload: dict, paths: list[str], is_best: bool, prune: Callable[[], None]) -> None:
        self.remove_stale_temp_files()
        try:
            for path in paths:
                self.write(payload, path)
                log.info("saved %s", path)
            if paths:
                prune()  # only once the new file is safely on disk
            if is_best:
                self.write(payload, self.best_path)
                log.info("saved %s (best host metric so far: %.4f)", self.best_path, payload["train_state"]["best_val"])
        except CheckpointWriteError as err:
            raise CheckpointWriteError(f"{err}; {self.describe_newest()}") from err

    def _prune_epoch_files(self) -> None:
        if self.keep > 0:
            for path in self.epoch_files()[:-self.keep]:
                os.remove(path)

    def _prune_step_files(self) -> None:
        if self.keep_last > 0:
            for path in self.step_files()[:-self.keep_last]:
                os.remove(path)

    def remove_stale_temp_files(self) -> list[str]:
        """Temporary files of this prefix left by an interrupted save (`kill -9`, a node lost mid-write)."""
        name = glob.escape(os.path.basename(self.prefix))
        return (remove_stale_temp_files(f"{glob.escape(self.prefix)}-*.tmp-*")
                + remove_stale_temp_files(os.path.join(glob.escape(self.steps_folder), f"{name}-*.tmp-*")))

    # ----- resuming ----------------------------------------------------------------------------------------------
    def find_resume(self, resume: bool, auto_resume: bool, begin_epoch: int, end_epoch: int) -> str | None:
        """The file to resume from, decided on rank 0 before anything is written: RESUME = epoch BEGIN_EPOCH-1;
        AUTO_RESUME = the newest readable epoch or step file (a corrupt newer one is reported by name and skipped).
        The chosen file must come from the same experiment (`check_same_experiment`), else every rank raises."""
        if self.sharded is not None:
            return self.sharded.find_resume(resume, auto_resume, begin_epoch, end_epoch)
        return dist.io_on_rank0(lambda: self._choose(resume, auto_resume, begin_epoch, end_epoch))

    def _choose(self, resume: bool, auto_resume: bool, begin_epoch: int, end_epoch: int) -> str | None:
        self.remove_stale_temp_files()
        if resume:
            path = self.epoch_path(begin_epoch - 1)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"TRAIN.RESUME: {path} does not exist (BEGIN_EPOCH={begin_epoch})")
            candidates = [path]
        elif auto_resume:
            files = sorted(self.epoch_files() + self.step_files(), key=position)
            candidates = [p for p in reversed(files) if before_end(p, end_epoch)]
        else:
            return None
        for path in candidates:
            try:
                ckpt = self.read(path)
            except ValueError as err:
                if resume:
                    raise
                log.error("AUTO_RESUME: skipping unreadable checkpoint %s (%s)", path, err)
                continue
            check_same_experiment(ckpt.get("config"), self.config, path)
            self._read_ahead = (path, ckpt)
            return path
        return None

    def restore(self, path: str, parts: TrainingParts) -> None:
        """Load everything a resume needs from `path` (every rank reads the same file, rank 0 once)."""
        if self.sharded is not None:
            return self.sharded.restore(path, parts)
        cached, self._read_ahead = self._read_ahead, None
        ckpt = cached[1] if cached is not None and cached[0] == path else self.read(path)
        state = parts.state
        if not restore_checkpoint_state(ckpt, parts, path, dist.rank(), dist.world_size()):
            state.epoch = int(EPOCH_FILE.search(path).group(1)) + 1  # an original checkpoint: epoch from the name
        del ckpt, cached
        dist.io_barrier()  # no rank may enter a training collective while another is still reading
        where = f"epoch {state.epoch}" + (f" after batch {state.batches_done}" if state.batches_done else "")
        log.info("resumed from %s: %s, global step %d", path, where, state.global_step)
