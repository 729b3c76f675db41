"""The logit caches of `vcr/val.py` and `vcr/test.py --use-cache`, with a record of what made them.

A cache is `{prefix}.npy` (logits [rows, 4]), `{prefix}_ids.txt` (each row's annot_id) and `{prefix}_meta.json`:
the checkpoint (absolute path, size, modification time), the config (its file and a SHA-256 of the resolved
config, overrides and DATASET.TASK included), the annotation file (path and SHA-256), the split, the batch size
and autocast. `--use-cache` reuses a cache only when this record equals the one of the current command; otherwise
(another checkpoint, config or annotation file, or a cache without a record) the model runs again and rewrites it,
with a warning saying why. The record is written last and removed first, so an interrupted write leaves no cache
that looks valid.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

import numpy as np

from common.atomic_write import open_atomic, write_json_atomic
from common.config_node import ConfigNode
from common.data.loader import SPLIT_SECTIONS

log = logging.getLogger(__name__)
FORMAT = 1


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_identity(path: str) -> dict[str, Any]:
    """Absolute path, size and modification time (ns): a checkpoint is too large to hash on every run."""
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def config_sha256(cfg: ConfigNode) -> str:
    """SHA-256 of the resolved config (plain values, sorted keys)."""
    text = json.dumps(cfg.to_dict(), sort_keys=True, default=list)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_source(cfg: ConfigNode, cfg_path: str, ckpt_path: str, split: str, batch_size: int | None,
                 autocast: bool) -> dict[str, Any]:
    """What makes the logits of one model over one split: the record a cache must match."""
    annotations = os.path.join(cfg.DATASET.DATASET_PATH, cfg.DATASET[f"{SPLIT_SECTIONS[split]}_ANNOTATION_FILE"])
    return {
        "format": FORMAT,
        "checkpoint": checkpoint_identity(ckpt_path),
        "config": {"file": os.path.abspath(cfg_path), "sha256": config_sha256(cfg)},
        "annotations": {"path": os.path.abspath(annotations), "sha256": file_sha256(annotations)},
        "split": split,
        "task": str(cfg.DATASET.TASK),
        "batch_size": batch_size,
        "autocast": autocast,
    }


def _differences(stored: dict, wanted: dict) -> list[str]:
    return [f"{key}: cache {stored.get(key)!r}, now {value!r}" for key, value in wanted.items()
            if stored.get(key) != value]


def read_cache(prefix: str, source: dict[str, Any]) -> tuple[np.ndarray, list[str]] | None:
    """The cached logits and annot_ids when the cache under `prefix` was made by `source`; else None, with a
    warning that says why (no cache is silent: there is nothing to warn about)."""
    paths = [prefix + ".npy", prefix + "_ids.txt"]
    meta_path = prefix + "_meta.json"
    if not all(os.path.isfile(p) for p in paths):
        return None
    if not os.path.isfile(meta_path):
        log.warning("%s.npy has no record of what made it (%s is missing): running the model again", prefix,
                    meta_path)
        return None
    try:
        with open(meta_path, encoding="utf-8") as handle:
            stored = json.load(handle)
    except (OSError, ValueError) as err:
        log.warning("%s: unreadable (%s): running the model again", meta_path, err)
        return None
    differences = _differences(stored if isinstance(stored, dict) else {}, source)
    if differences:
        log.warning("%s.npy was made by other inputs; running the model again (%s)", prefix, "; ".join(differences))
        return None
    log.info("using cached %s.npy (made by %s)", prefix, source["checkpoint"]["path"])
    with open(paths[1], encoding="utf-8") as handle:
        return np.load(paths[0]), handle.read().split()


def write_cache(prefix: str, logits: np.ndarray, annot_ids: list[str], source: dict[str, Any]) -> None:
    """Logits, ids, then the record (each file atomically)."""
    meta_path = prefix + "_meta.json"
    if os.path.exists(meta_path):
        os.remove(meta_path)  # until the new record is written, the files below are not a valid cache
    with open_atomic(prefix + ".npy", "wb") as handle:
        np.save(handle, logits)
    with open_atomic(prefix + "_ids.txt") as handle:
        handle.write("\n".join(annot_ids) + "\n")
    write_json_atomic(meta_path, source, indent=1)
