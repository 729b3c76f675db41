"""Atomic writes of every result, cache and tool output file: write a temporary file in the same folder, then
rename it over the real name, so a reader sees the old file or the new one, never half of one.

`open_atomic` is the one implementation; the other functions are shorthands on top of it. An exception while
writing (a full disk, Ctrl-C, a value that does not serialise) leaves the previous file untouched and removes the
temporary file; `kill -9` can leave only a `<name>.tmp-<pid>` file beside it, never a damaged `<name>`.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["open_atomic", "temporary_name", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]


def temporary_name(path: str) -> str:
    """`<path>.tmp-<pid>`: the pattern the checkpoints use too (one writer per process and file)."""
    return f"{path}.tmp-{os.getpid()}"


@contextlib.contextmanager
def open_atomic(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """`open(path, mode)` for writing ("w" or "wb"), made atomic: the handle writes `temporary_name(path)`, which
    is flushed to disk and renamed over `path` when the block ends without an exception. Creates the folder.

    A plain `open` creates the temporary file, so the result gets the usual permissions (the umask's), not 0600.
    """
    if not mode.startswith("w"):
        raise ValueError(f"open_atomic writes a whole file: mode must start with 'w', got {mode!r}")
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temporary_name(path)
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    try:
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(path: str | os.PathLike[str], data: Any, **dump_kwargs: Any) -> None:
    """`json.dump(data)` into `path`, atomically."""
    with open_atomic(path) as handle:
        json.dump(data, handle, **dump_kwargs)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """`text` into `path` (UTF-8), atomically."""
    with open_atomic(path) as handle:
        handle.write(text)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """`data` into `path`, atomically."""
    with open_atomic(path, "wb") as handle:
        handle.write(data)
