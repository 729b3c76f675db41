"""Checkpoints of sharded runs (TRAIN.DATA_PARALLEL zero1 / fsdp) and DCP folders (TRAIN.CHECKPOINT_FORMAT dcp), on
behalf of `common/engine/checkpoint.py::Checkpointer`, which hands over save / find_resume / restore to this class.

- `file`: the state is gathered to rank 0, which writes the usual `{prefix}-{epoch:04d}.model` (keys as a ddp run's).
- `dcp`: every rank writes its shard into `{prefix}-{epoch:04d}.dcp.tmp`, rank 0 adds `trainer.pt`, and the folder is
  renamed to `{prefix}-{epoch:04d}.dcp` only once complete (AUTO_RESUME never picks a half-written checkpoint). With
  TRAIN.CHECKPOINT_ASYNC the write runs in the background (`dcp.async_save`, after a copy of the state) until the next
  save, or the last epoch's, waits for it. A DCP folder resumes on any number of processes and in any mode.
- Step checkpoints (TRAIN.CHECKPOINT_EVERY_STEPS) are `steps/{name}-e{epoch:04d}-s{step:08d}.dcp` folders (or
  `.model` files), written the same way; TRAIN.KEEP_LAST prunes them once the new one is complete. Every checkpoint
  holds `checkpoint_state`'s train_state (the data position), so a resume continues part-way into an epoch.
"""
from __future__ import annotations

import glob
import logging
import os
import re
import shutil

from torch import nn

from common.engine import dist
from common.engine.checkpoint import (
    Checkpointer,
    load_checkpoint,
    rng_state,
    save_atomic,
    set_rng_state,
    strip_module_prefix,
    unwrap,
)
from common.engine.resume_check import check_same_experiment
from common.engine.sharded_state import (
    gather_model_state,
    gather_optimizer_state,
    load_full_model_state,
    load_full_optimizer_state,
    load_named_optimizer_state,
    named_optimizer_state,
    named_param_groups,
    parameter_names,
)
from common.engine.state import TrainingParts, checkpoint_state
from common.model.dcp_files import (
    DCP_SUFFIX,
    FORMAT_VERSION,
    TRAINER_FILE,
    SafeFileSystemReader,
    is_dcp_folder,
    nest,
    read_tensor_metadata,
    read_trainer_file,
    single_process_quiet,
)

log = logging.getLogger(__name__)

EPOCH_ENTRY = re.compile(r"-(\d{4})(\.model|\.dcp)$")
STEP_ENTRY = re.compile(r"-e(\d{4})-s(\d{8,})(\.model|\.dcp)$")


class _Given:
    """Stands in for a module or optimizer whose state dict was gathered already (for `checkpoint_state`)."""

    def __init__(self, state_dict: dict):
        self._state_dict = state_dict

    def state_dict(self) -> dict:
        return self._state_dict


def sharded_checkpointing(owner: Checkpointer) -> ShardedCheckpointing | None:
    """The handler a Checkpointer delegates to, from its config: None for ddp with `.model` files (unchanged)."""
    train = (owner.config or {}).get("TRAIN", {})
    mode, fmt = train.get("DATA_PARALLEL", "ddp"), train.get("CHECKPOINT_FORMAT", "file")
    if mode == "ddp" and fmt == "file":
        return None
    return ShardedCheckpointing(owner, fmt, bool(train.get("CHECKPOINT_ASYNC", False)), int(train.get("END_EPOCH", 0)))


class ShardedCheckpointing:
    """Save, find and restore checkpoints of one run; every method is called on every rank."""

    def __init__(self, owner: Checkpointer, fmt: str, async_save: bool, end_epoch: int):
        self.owner, self.fmt, self.async_save, self.end_epoch = owner, fmt, async_save, end_epoch
        self.pending = None  # (future, publish) of a background save
        self._async_group = None

    # ---- paths ----------------------------------------------------------------------------------------------
    def path(self, epoch: int | str) -> str:
        name = f"{epoch:04d}" if isinstance(epoch, int) else epoch
        return f"{self.owner.prefix}-{name}" + (DCP_SUFFIX if self.fmt == "dcp" else ".model")

    def step_path(self, epoch: int, global_step: int) -> str:
        name = os.path.basename(self.owner.step_path(epoch, global_step))[:-len(".model")]
        return os.path.join(self.owner.steps_folder, name + (DCP_SUFFIX if self.fmt == "dcp" else ".model"))

    def step_entries(self) -> list[tuple[tuple[int, int], str]]:
        """((epoch, global step), path) of every complete step checkpoint of this prefix, oldest first."""
        name = glob.escape(os.path.basename(self.owner.prefix))
        found = []
        for path in glob.glob(os.path.join(glob.escape(self.owner.steps_folder), f"{name}-e*")):
            match = STEP_ENTRY.search(path)
            if match and (os.path.isfile(path) if match.group(3) == ".model" else is_dcp_folder(path)):
                found.append(((int(match.group(1)), int(match.group(2))), path))
        return sorted(found)

    def resumable(self, end_epoch: int) -> list[str]:
        """Epoch and step checkpoints of a run that stops at `end_epoch`, newest first (as `before_end`)."""
        entries = [((epoch + 1, 0), path) for epoch, path in self.epoch_entries() if epoch < end_epoch]
        entries += [(where, path) for where, path in self.step_entries() if where[0] < end_epoch]
        return [path for _, path in sorted(entries, key=lambda entry: entry[0], reverse=True)]

    def remove_stale_temp_folders(self) -> None:
        """`.dcp.tmp` / `.dcp.old` folders left by a run stopped while writing (called before this run writes)."""
        name = glob.escape(os.path.basename(self.owner.prefix))
        for folder in (os.path.dirname(self.owner.prefix), self.owner.steps_folder):
            for suffix in (".tmp", ".old"):
                for path in glob.glob(os.path.join(glob.escape(folder), f"{name}-*{DCP_SUFFIX}{suffix}")):
                    shutil.rmtree(path, ignore_errors=True)
                    log.warning("removed %s, left by a save that was interrupted", path)

    def epoch_entries(self) -> list[tuple[int, str]]:
        """(epoch, path) of every epoch checkpoint of this prefix, `.model` files and complete `.dcp` folders, oldest
        first (this run's format last within an epoch)."""
        found = []
        for path in glob.glob(f"{glob.escape(self.owner.prefix)}-*"):
            match = EPOCH_ENTRY.search(path)
            if match and (os.path.isfile(path) if match.group(2) == ".model" else is_dcp_folder(path)):
                found.append((int(match.group(1)), match.group(2) == self.path(0)[-len(match.group(2)):], path))
        return [(epoch, path) for epoch, _, path in sorted(found)]

    # ---- save -----------------------------------------------------------------------------------------------
    def save(self, epoch: int, is_best: bool, parts: TrainingParts, due: bool, step_file: bool = False) -> None:
        """The epoch checkpoint of `epoch` when `due`, the step checkpoint of this update when `step_file`, the best
        one when `is_best` (a collective)."""
        state = parts.state
        targets = ([self.step_path(state.epoch, state.global_step)] * step_file + [self.path(epoch)] * due
                   + [self.path("best")] * is_best)
        if targets:
            rng_per_rank = dist.all_gather_object(rng_state())
            (self._save_dcp if self.fmt == "dcp" else self._save_file)(targets, parts, rng_per_rank)
            if is_best:
                log.info("best host metric so far: %.4f (epoch %d)", parts.state.best_val, epoch)
        if self.pending is not None and epoch + 1 >= self.end_epoch:
            self.wait()  # the last checkpoint of the run is complete before the run ends
        dist.barrier()

    def payload(self, parts: TrainingParts, model_state: dict, optimizer_state: dict, rng_per_rank: list) -> dict:
        """`checkpoint_state` (train_state with the data position included) with the given gathered states."""
        given = TrainingParts(parts.state, _Given(model_state), _Given(optimizer_state), parts.schedule, parts.amp)
        return checkpoint_state(given, rng_per_rank, self.owner.config)

    def _save_file(self, targets: list[str], parts: TrainingParts, rng_per_rank: list) -> None:
        model_state, optimizer_state = gather_model_state(parts.module), gather_optimizer_state(parts.optimizer)

        def write() -> None:  # rank 0, while the others wait under the checkpoint I/O timeout
            self.owner.remove_stale_temp_files()
            payload = self.payload(parts, model_state, optimizer_state, rng_per_rank)
            for target in targets:
                save_atomic(payload, target)
                log.info("saved %s", target)
            self._prune()

        dist.io_on_rank0(write)

    def _save_dcp(self, targets: list[str], parts: TrainingParts, rng_per_rank: list) -> None:
        import torch.distributed.checkpoint as dcp

        self.wait()
        module, optimizer = parts.module, parts.optimizer
        names = parameter_names(module)
        tensors, others = named_optimizer_state(optimizer, names)
        others = {k: v for rank_others in dist.all_gather_object(others) for k, v in rank_others.items()}
        temporary = targets[0] + ".tmp"
        if dist.rank() == 0:
            shutil.rmtree(temporary, ignore_errors=True)  # left by a run that stopped while writing
            trainer = self.payload(parts, {}, {}, rng_per_rank)
            del trainer["state_dict"], trainer["optimizer"]
            trainer.update(format={"version": FORMAT_VERSION, "world_size": dist.world_size()},
                           optimizer_param_groups=named_param_groups(optimizer, names), optimizer_other_state=others)
            save_atomic(trainer, os.path.join(temporary, TRAINER_FILE))
        dist.barrier()
        shards = {"model": unwrap(module).state_dict(), "optimizer": tensors}
        writer = dcp.FileSystemWriter(temporary)
        with single_process_quiet():
            if self.async_save:
                future = dcp.async_save(shards, storage_writer=writer, process_group=self.async_group())
                self.pending = (future, lambda: self._publish(temporary, targets))
                log.info("writing %s in the background", targets[0])
            else:
                dcp.save(shards, storage_writer=writer)
        if not self.async_save:
            self._publish(temporary, targets)

    def async_group(self):
        """A gloo process group of its own for the background writes (collectives of another thread)."""
        import torch.distributed as torch_dist

        if self._async_group is None and dist.is_initialized():
            self._async_group = torch_dist.new_group(backend="gloo")
        return self._async_group

    def wait(self) -> None:
        """Finish the background save, if any (every rank), and publish it (rank 0)."""
        if self.pending is None:
            return
        future, publish = self.pending
        self.pending = None
        future.result()  # on rank 0: after every rank's shard and the metadata are written
        publish()

    def _publish(self, temporary: str, targets: list[str]) -> None:
        """Rank 0: rename the complete temporary folder to the first target, copy it to the others, prune."""
        if dist.rank() != 0:
            return
        for target in targets:
            if target != targets[0]:
                temporary = target + ".tmp"
                shutil.rmtree(temporary, ignore_errors=True)
                shutil.copytree(targets[0], temporary)
            if os.path.exists(target):  # a directory cannot be renamed over another: move the old one away first
                shutil.rmtree(target + ".old", ignore_errors=True)
                os.rename(target, target + ".old")
            os.rename(temporary, target)
            shutil.rmtree(target + ".old", ignore_errors=True)
            log.info("saved %s", target)
        self._prune()

    def _prune(self) -> None:
        """CHECKPOINT_KEEP epoch and TRAIN.KEEP_LAST step checkpoints, once the new one is complete (renamed)."""
        old = self.epoch_entries()[:-self.owner.keep] if self.owner.keep > 0 else []
        old += self.step_entries()[:-self.owner.keep_last] if self.owner.keep_last > 0 else []
        for _, path in old:
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)

    # ---- resume ---------------------------------------------------------------------------------------------
    def find_resume(self, resume: bool, auto_resume: bool, begin_epoch: int, end_epoch: int) -> str | None:
        """As `Checkpointer.find_resume`, over `.model` files and complete `.dcp` folders: decided on rank 0 before
        anything is written, and the chosen checkpoint must be this experiment's (`check_same_experiment`)."""
        return dist.io_on_rank0(lambda: self._choose(resume, auto_resume, begin_epoch, end_epoch))

    def _choose(self, resume: bool, auto_resume: bool, begin_epoch: int, end_epoch: int) -> str | None:
        self.owner.remove_stale_temp_files()
        self.remove_stale_temp_folders()
        if resume:
            wanted = [path for epoch, path in self.epoch_entries() if epoch == begin_epoch - 1]
            if not wanted:
                raise FileNotFoundError(f"TRAIN.RESUME: {self.path(begin_epoch - 1)} does not exist "
                                        f"(BEGIN_EPOCH={begin_epoch})")
            candidates = wanted[-1:]
        elif auto_resume:
            candidates = self.resumable(end_epoch)
        else:
            return None
        for path in candidates:
            try:
                saved = read_trainer_file(path) if os.path.isdir(path) else load_checkpoint(path)
            except ValueError as err:
                if resume:
                    raise
                log.error("AUTO_RESUME: skipping unreadable checkpoint %s (%s)", path, err)
                continue
            check_same_experiment(saved.get("config"), self.owner.config, path)
            return path
        return None

    def restore(self, path: str, parts: TrainingParts) -> None:
        """Load a `.model` file or a `.dcp` folder into this run, whatever its mode and number of processes."""
        if os.path.isdir(path):
            saved = read_trainer_file(path)
            self._load_dcp_tensors(path, saved, parts.module, parts.optimizer)
        else:
            saved = load_checkpoint(path)
            load_full_model_state(parts.module, strip_module_prefix(saved["state_dict"]))
            load_full_optimizer_state(parts.optimizer, saved["optimizer"])
        apply_training_state(saved, path, parts)
        dist.io_barrier()  # no rank may enter a training collective while another is still reading

    def _load_dcp_tensors(self, path: str, saved: dict, module: nn.Module, optimizer) -> None:
        import torch
        import torch.distributed.checkpoint as dcp

        entries = read_tensor_metadata(path)
        saved_model = {k for k in nest(dict.fromkeys(entries))["model"]}
        model_state = unwrap(module).state_dict()
        if saved_model != set(model_state):
            raise ValueError(f"{path}: model keys differ from this run's: missing "
                             f"{sorted(set(model_state) - saved_model)[:5]}, unexpected "
                             f"{sorted(saved_model - set(model_state))[:5]}")
        names = parameter_names(module)
        by_name = {names[id(p)]: p for g in optimizer.param_groups for p in g["params"]}
        owned = {names[id(p)] for g in getattr(optimizer, "optim", optimizer).param_groups for p in g["params"]}
        template = {}
        for key, entry in entries.items():
            name, _, state_key = key[len("optimizer."):].rpartition(".")
            if key.startswith("optimizer.") and name in owned:
                param = by_name[name]
                like = tuple(entry.size) == tuple(param.shape)
                template.setdefault(name, {})[state_key] = (
                    torch.zeros_like(param, dtype=entry.properties.dtype) if like
                    else torch.zeros(tuple(entry.size), dtype=entry.properties.dtype))
        shards = {"model": model_state, "optimizer": template}
        with single_process_quiet():
            dcp.load(shards, storage_reader=SafeFileSystemReader(path))
        unwrap(module).load_state_dict(model_state)
        load_named_optimizer_state(optimizer, names, saved["optimizer_param_groups"], template,
                                   saved["optimizer_other_state"])


def apply_training_state(saved: dict, path: str, parts: TrainingParts) -> None:
    """Scheduler, scaler, train_state (the data position included) and this rank's generators from a checkpoint (as
    `Checkpointer.restore`)."""
    state = parts.state
    if saved.get("scheduler"):
        parts.schedule.load_state_dict(saved["scheduler"])
    if saved.get("scaler"):
        parts.amp.load_state_dict(saved["scaler"])
    if saved.get("train_state"):
        state.load_state_dict(saved["train_state"])
    else:  # an original checkpoint: only the epoch is known from the file name
        state.epoch = int(EPOCH_ENTRY.search(path).group(1)) + 1
        monitor = saved.get("validation_monitor") or {}
        state.best_epoch, state.best_val = monitor.get("best_epoch", -1), monitor.get("best_val", float("-inf"))
    rng = saved.get("rng") or []
    if len(rng) == dist.world_size():
        set_rng_state(rng[dist.rank()])
    elif rng:
        log.warning("%s holds RNG states of %d rank(s) but this run has %d: generators not restored, so the run "
                    "continues correctly but not bit-identically", path, len(rng), dist.world_size())
    where = f"epoch {state.epoch}" + (f" after batch {state.batches_done}" if state.batches_done else "")
    log.info("resumed from %s: %s, global step %d", path, where, state.global_step)
