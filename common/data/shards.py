"""WebDataset tar shards on local disk: the shard list of a config key, per-shard sample counts (from the sidecar
`data/make_shards.py` writes next to each shard, else by scanning), and a shard's samples with errors naming shard
and key.

A sample is the tar members sharing a key (`000042.jpg`, `000042.json`, ...), as webdataset groups them; the
sidecar `train-000003.json` of `train-000003.tar` is written after the shard is complete (see make_shards).
"""
from __future__ import annotations

import json
import logging
import os
import tarfile
from collections.abc import Iterator

from webdataset.shardlists import expand_urls
from webdataset.tariterators import base_plus_ext, tar_file_iterator

log = logging.getLogger(__name__)

SIDECAR_VERSION = 1
_REMOTE_PREFIXES = ("pipe:", "http:", "https:", "s3:", "gs:", "ais:", "hf:")


class ShardError(OSError):
    """A shard that is missing, truncated or not a tar archive; the message names the shard (and the key)."""


def sidecar_path(shard: str) -> str:
    """'dir/train-000003.tar' -> 'dir/train-000003.json' (the shard's record, written when it is complete)."""
    return os.path.splitext(shard)[0] + ".json"


def expand_shards(pattern: str, base_dir: str = "", key: str = "DATASET.*_SHARDS") -> list[str]:
    """Shard paths of a config value: brace patterns (`train-{000000..000331}.tar`), several joined by '::';
    relative paths are taken relative to `base_dir` (DATASET.DATASET_PATH). Only local files are read: a
    config value never runs a command or opens a network stream."""
    pattern = (pattern or "").strip()
    if not pattern:
        raise ValueError(f"{key} is empty: give the shard files, e.g. 'train-{{000000..000099}}.tar'")
    shards = []
    for url in expand_urls(pattern):
        if url.startswith(_REMOTE_PREFIXES):
            raise ValueError(f"{key}: only local shard files are read, found {url!r} (mount or copy the shards)")
        url = url[len("file:"):] if url.startswith("file:") else url
        shards.append(url if os.path.isabs(url) or not base_dir else os.path.join(base_dir, url))
    return shards


def read_sidecar(shard: str, check_size: bool = True) -> dict | None:
    """The shard's sidecar record, or None when it is absent or unreadable, or (`check_size`) does not match the
    shard's size: a shard cut or rewritten after its record was written is not complete."""
    path = sidecar_path(shard)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
        record["samples"], record["bytes"] = int(record["samples"]), int(record["bytes"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("%s: unreadable shard record, ignored (%s)", path, err)
        return None
    size = os.path.getsize(shard) if os.path.isfile(shard) else None
    if size != record["bytes"]:
        log.warning("%s: %s bytes but its record %s says %d (cut or rewritten after it was made)", shard,
                    "no file" if size is None else size, path, record["bytes"])
        if check_size:
            return None
    return record


def count_by_scan(shard: str) -> int:
    """Samples (distinct keys) in a shard, from its member headers; a cut shard counts the samples before the cut."""
    keys = set()
    try:
        with tarfile.open(shard, "r:") as archive:
            for member in archive:
                prefix, _ = base_plus_ext(member.name)
                if member.isreg() and prefix is not None:
                    keys.add(prefix)
    except (OSError, tarfile.TarError, EOFError) as err:
        if not keys:
            raise ShardError(f"shard {shard}: cannot be read as a tar archive ({err})") from err
        log.warning("shard %s: unreadable after %d samples (%s)", shard, len(keys), err)
    return len(keys)


def sample_counts(shards: list[str]) -> list[int]:
    """Samples per shard: the sidecar's count (what the shard should hold, even when it was cut since), else
    counted from the member headers."""
    counts, scanned = [], 0
    for shard in shards:
        record = read_sidecar(shard, check_size=False)
        if record is None:
            counts.append(count_by_scan(shard))
            scanned += 1
        else:
            counts.append(record["samples"])
    if scanned:
        log.info("counted the samples of %d of %d shards by reading their headers (no record)", scanned, len(shards))
    return counts


def shard_holding(shards: list[str], index: int) -> tuple[str, str, str] | None:
    """(shard, first key, last key) of the first shard whose record's numeric key range holds `index` (keys are
    record numbers for make_shards' record inputs, img2dataset's numbers otherwise), or None when no record says."""
    for shard in shards:
        record = read_sidecar(shard, check_size=False) or {}
        first, last = str(record.get("first_key") or ""), str(record.get("last_key") or "")
        if first.isdigit() and last.isdigit() and int(first) <= index <= int(last):
            return shard, first, last
    return None


def missing_shards(shards: list[str]) -> list[str]:
    return [shard for shard in shards if not os.path.isfile(shard)]


def iter_shard(shard: str, expected: int | None = None) -> Iterator[dict]:
    """Samples of one shard in order: {"__key__", "__shard__", <ext>: bytes, ...}.

    Raises ShardError naming the shard, the last complete key and the sample being read when the shard is
    missing, is not a tar archive, ends in the middle of a member, or holds fewer than `expected` samples (a tar cut
    at a member boundary reads as a shorter archive). The samples before the error have been yielded.
    """
    current: dict | None = None
    last_key, count = None, 0
    try:
        handle = open(shard, "rb")
    except OSError as err:
        raise ShardError(f"shard not found or unreadable: {shard} ({err.strerror or err})") from err
    with handle:
        try:
            for member in tar_file_iterator(handle):
                prefix, suffix = base_plus_ext(member["fname"])
                if prefix is None:
                    continue
                if current is not None and prefix != current["__key__"]:
                    yield current
                    last_key, count, current = current["__key__"], count + 1, None
                if current is None:
                    current = {"__key__": prefix, "__shard__": shard}
                current[suffix.lower()] = member["data"]
        except (OSError, tarfile.TarError, EOFError, ValueError) as err:
            reading = f", while reading key {current['__key__']!r}" if current is not None else ""
            raise ShardError(f"shard {shard}: truncated or corrupt after key {last_key!r}{reading} "
                             f"({str(err).split(' @ ')[0]})") from err
    if current is not None:
        yield current
        last_key, count = current["__key__"], count + 1
    if expected is not None and count < expected:
        raise ShardError(f"shard {shard}: ends after key {last_key!r} with {count} of its {expected} samples "
                         f"(truncated?)")
