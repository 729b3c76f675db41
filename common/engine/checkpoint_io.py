"""Checkpoint files on disk besides the atomic write (`common/engine/checkpoint.py::save_atomic`): the names of its
temporary files, the safe read, and the removal of temporary files that a killed writer left behind.

A temporary file is named `{final name}.tmp-{host}-{pid}`, so a later run can tell whether its writer may still be
alive. Files of the earlier `{final name}.tmp-{pid}` form count as written on this host.
"""
from __future__ import annotations

import glob
import logging
import os
import re
import socket
import time

import torch

log = logging.getLogger(__name__)

TEMP_SUFFIX = re.compile(r"\.tmp-(?:(?P<host>[A-Za-z0-9_.]+)-)?(?P<pid>\d+)$")
STALE_TEMP_S = 3600  # a temporary file untouched this long is not being written (a save rewrites it continuously)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, quota, permissions, I/O error); its temporary file is gone."""


def this_host() -> str:
    """The host name as it appears in temporary file names (characters other than [A-Za-z0-9_.] dropped)."""
    return re.sub(r"[^A-Za-z0-9_.]", "", socket.gethostname()) or "host"


def temp_path(path: str) -> str:
    return f"{path}.tmp-{this_host()}-{os.getpid()}"


def load_checkpoint(path: str) -> dict:
    """Read a training checkpoint safely; errors name the file."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise ValueError(f"{path}: not a training checkpoint (expected a dict with 'state_dict')")
    return obj


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def is_stale(path: str, now: float | None = None) -> bool:
    """Whether a temporary checkpoint file is left over: its writer on this host is gone (or is this very process,
    which has not begun a save: a restarted container reuses pids), or nobody has written to it for STALE_TEMP_S
    (a writer on another host: its pid means nothing here)."""
    match = TEMP_SUFFIX.search(path)
    if match is None:
        return False
    host, pid = match.group("host"), int(match.group("pid"))
    if host in (None, this_host()) and (pid == os.getpid() or not _pid_alive(pid)):
        return True
    try:
        age = (now or time.time()) - os.path.getmtime(path)
    except OSError:  # removed meanwhile
        return False
    return age > STALE_TEMP_S


def remove_stale_temp_files(pattern: str) -> list[str]:
    """Remove the left-over temporary files among `glob(pattern)` (a writer's live file is kept); returns them."""
    removed = []
    for path in glob.glob(pattern):
        if not is_stale(path):
            if TEMP_SUFFIX.search(path):
                log.info("keeping %s: its writer may still be saving", path)
            continue
        try:
            size = os.path.getsize(path)
            os.remove(path)
        except FileNotFoundError:
            continue
        removed.append(path)
        log.warning("removed %s (%.1f MB), left by a save that was interrupted", path, size / 2**20)
    return removed
