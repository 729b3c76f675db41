"""Process-group setup from the torchrun (or SLURM) environment, and the few collectives the engine needs.

One process without a launcher runs with no process group at all; every helper then degrades to a no-op.

Two timeouts: every collective of the training loop fails after `timeout_s` (TRAIN.DIST_TIMEOUT_S in training runs;
the VLBERT_DIST_TIMEOUT_S environment variable, else 300 s, for scripts without that key), so a dead or hung rank
ends the job quickly. Waiting for checkpoint I/O (rank 0 writing or reading a file of several GB while the others
wait) is not bounded by it: those waits (`io_barrier`, `io_broadcast_object`) run in a separate gloo group whose
timeout is `io_timeout_s` (TRAIN.CHECKPOINT_TIMEOUT_S).
"""
from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import Tensor

log = logging.getLogger(__name__)

# Seconds a collective may wait for a peer before failing; small enough that a dead rank ends the run quickly.
DEFAULT_TIMEOUT_S = int(os.environ.get("VLBERT_DIST_TIMEOUT_S", "300"))
# Seconds the other ranks may wait while a checkpoint is written or read.
DEFAULT_IO_TIMEOUT_S = 3600
_IO_GROUP: Any = None  # the gloo group of checkpoint I/O waits (set by `setup`)
DEFAULT_MASTER_PORT = "29500"  # as the original's SLURM path


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _first_slurm_host(nodelist: str) -> str:
    """First host name of a SLURM node list, via `scontrol show hostname` as the original."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostname", nodelist], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise RuntimeError(f"--slurm: cannot expand SLURM_JOB_NODELIST={nodelist!r} with scontrol: {err}") from err
    return out.split()[0]


def read_launch_env(slurm: bool = False) -> dict[str, str]:
    """RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT from torchrun's variables or SLURM's."""
    if slurm:
        needed = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_NODELIST")
        missing = [k for k in needed if k not in os.environ]
        if missing:
            raise RuntimeError(f"--slurm given but the SLURM variables {missing} are not set")
        return {
            "RANK": os.environ["SLURM_PROCID"],
            "WORLD_SIZE": os.environ["SLURM_NTASKS"],
            "LOCAL_RANK": os.environ["SLURM_LOCALID"],
            "MASTER_ADDR": os.environ.get("MASTER_ADDR") or _first_slurm_host(os.environ["SLURM_JOB_NODELIST"]),
            "MASTER_PORT": os.environ.get("MASTER_PORT", DEFAULT_MASTER_PORT),
        }
    return {
        "RANK": os.environ.get("RANK", "0"),
        "WORLD_SIZE": os.environ.get("WORLD_SIZE", "1"),
        "LOCAL_RANK": os.environ.get("LOCAL_RANK", "0"),
        "MASTER_ADDR": os.environ.get("MASTER_ADDR", "127.0.0.1"),
        "MASTER_PORT": os.environ.get("MASTER_PORT", DEFAULT_MASTER_PORT),
    }


def launched_distributed() -> bool:
    """True under torchrun (or any launcher that sets WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(distributed: bool | None = None, slurm: bool = False, timeout_s: int = DEFAULT_TIMEOUT_S,
          io_timeout_s: int = DEFAULT_IO_TIMEOUT_S) -> DistEnv:
    """Initialise the process group (NCCL on GPU, gloo on CPU) and the checkpoint I/O group, and pick this rank's
    device.

    `distributed=None` means: distributed when a launcher set WORLD_SIZE > 1 (so `--dist` is optional under torchrun).
    """
    env_vars = read_launch_env(slurm)
    rank, world_size, local_rank = (int(env_vars[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if distributed is None:
        distributed = world_size > 1 or slurm
    use_cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not distributed or world_size == 1:
        return DistEnv(rank=0, world_size=1, local_rank=0, device=device)
    if not torch_dist.is_initialized():
        os.environ.update(env_vars)  # env:// init reads them (SLURM values are copied here)
        backend = "nccl" if use_cuda else "gloo"
        torch_dist.init_process_group(
            backend=backend, init_method="env://", rank=rank, world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
        )
        log.info("process group: %s, rank %d of %d, device %s, timeout %d s (checkpoint I/O %d s)", backend, rank,
                 world_size, device, timeout_s, io_timeout_s)
    global _IO_GROUP
    if _IO_GROUP is None:
        _IO_GROUP = torch_dist.new_group(backend="gloo", timeout=timedelta(seconds=io_timeout_s))
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def teardown() -> None:
    """Destroy the process groups if there are any."""
    global _IO_GROUP
    _IO_GROUP = None
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def is_initialized() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def barrier() -> None:
    if is_initialized():
        torch_dist.barrier()


def io_barrier() -> None:
    """Wait for every rank while one of them writes or reads a checkpoint (the checkpoint I/O timeout applies)."""
    if is_initialized():
        torch_dist.barrier(group=_IO_GROUP)


def io_broadcast_object(obj: Any, src: int = 0) -> Any:
    """`broadcast_object` for a value that rank `src` computes from checkpoint files (the I/O timeout applies)."""
    if not is_initialized():
        return obj
    holder = [obj]
    torch_dist.broadcast_object_list(holder, src=src, group=_IO_GROUP)
    return holder[0]


def io_on_rank0(work: Callable[[], Any]) -> Any:
    """`work()` on rank 0 (checkpoint I/O), its result on every rank; the others wait under the I/O timeout. An
    exception on rank 0 is raised there and, as a RuntimeError quoting it, on every other rank, so that no rank is
    left waiting in a later collective."""
    result, error = None, None
    if rank() == 0:
        try:
            result = work()
        except Exception as err:  # noqa: BLE001 - re-raised below, on every rank
            error = err
    shared = io_broadcast_object((result, None if error is None else f"{type(error).__name__}: {error}"))
    if error is not None:
        raise error
    if shared[1] is not None:
        raise RuntimeError(f"rank 0 failed while handling a checkpoint: {shared[1]}")
    return shared[0]


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s value of a picklable object, on every rank."""
    if not is_initialized():
        return obj
    holder = [obj]
    torch_dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's value of a picklable object, in rank order."""
    if not is_initialized():
        return [obj]
    gathered: list[Any] = [None] * torch_dist.get_world_size()
    torch_dist.all_gather_object(gathered, obj)
    return gathered


def gather_object(obj: Any, dst: int = 0) -> list[Any] | None:
    """Every rank's value of a picklable object, in rank order, on rank `dst` only (None on the other ranks)."""
    if not is_initialized():
        return [obj]
    gathered: list[Any] | None = [None] * torch_dist.get_world_size() if torch_dist.get_rank() == dst else None
    torch_dist.gather_object(obj, gathered, dst=dst)
    return gathered


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """Mean over ranks (a new tensor; the input is left alone)."""
    if not is_initialized():
        return tensor.clone()
    out = tensor.detach().clone()
    torch_dist.all_reduce(out)
    return out / torch_dist.get_world_size()


def all_reduce_max(tensor: Tensor) -> Tensor:
    """Elementwise maximum over ranks (a new tensor)."""
    if not is_initialized():
        return tensor.clone()
    out = tensor.detach().clone()
    torch_dist.all_reduce(out, op=torch_dist.ReduceOp.MAX)
    return out


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return torch_dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return torch_dist.get_world_size() if is_initialized() else 1
