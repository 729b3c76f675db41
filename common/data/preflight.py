"""Pre-flight data check: every file and folder a config will read exists and parses, reported as one list.

Each problem names the file and the config key that points at it. The generic pieces live here (`Problems`, the
network weights, sampling); each task's own check is its `Task.check_data` (e.g. `vqa/check.py`). `preflight` is
the cheap mode (existence plus a handful of samples) that training start runs; `data/check.py` runs `check_data`
with a larger sample.
"""
from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING

from common.config_node import ConfigNode
from common.data.box_files import read_box_file
from common.data.image_io import open_image, path_exists

if TYPE_CHECKING:  # the Task value names its check with `Problems`; annotations only
    from common.engine.task import Task

log = logging.getLogger(__name__)
SPLITS = ("TRAIN", "VAL", "TEST")


class Problems(list):
    """A list of problem lines with helpers that never raise."""

    def need(self, path: str, key: str, what: str = "file") -> bool:
        if path and (os.path.isdir(path) or path_exists(path)):
            return True
        self.append(f"{what} not found: {path or '<empty>'} (config {key})")
        return False

    def json_file(self, path: str, key: str, top_keys: tuple[str, ...] = ()) -> object | None:
        if not self.need(path, key):
            return None
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as err:
            self.append(f"{path}: not valid JSON ({err}) (config {key})")
            return None
        missing = [k for k in top_keys if not isinstance(data, dict) or k not in data]
        if missing:
            self.append(f"{path}: lacks top-level key(s) {missing} (config {key})")
            return None
        return data

    def jsonl_file(self, path: str, key: str, limit: int | None = None) -> list:
        """Parse a JSON-lines file (all lines: a broken line hours in is what this check is for)."""
        if not self.need(path, key):
            return []
        rows = []
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as err:
                    self.append(f"{path}:{number}: not valid JSON ({err}) (config {key})")
                    return rows
                if limit is None or len(rows) < limit:
                    rows.append(row)
        if not rows:
            self.append(f"{path}: no records (config {key})")
        return rows

    def image(self, path: str, key: str) -> None:
        if self.need(path, key, "image"):
            try:
                open_image(path)
            except Exception as err:  # noqa: BLE001 - any decoder error is a problem to report
                self.append(f"image does not open: {path} ({err}) (config {key})")

    def box_file(self, path: str, key: str, num_classes: int | None = None, allow_empty: bool = False) -> None:
        """Exists, parses, has boxes (unless `allow_empty`); with `num_classes`, also `classes` [N, num_classes]
        (the MVRC target)."""
        if self.need(path, key, "box file"):
            try:
                record = read_box_file(path, fields=("classes",) if num_classes else (), feature_dim=None)
            except Exception as err:  # noqa: BLE001
                self.append(f"box file does not read: {path} ({err}) (config {key})")
                return
            if record["num_boxes"] == 0:
                if not allow_empty:
                    self.append(f"box file is empty (0 boxes): {path} (config {key})")
            elif num_classes and "classes" not in record:
                self.append(f"box file has no 'classes' (the MVRC target): {path} (config {key})")
            elif num_classes and record["classes"].shape[1] != num_classes:
                self.append(f"box file {path}: 'classes' has {record['classes'].shape[1]} columns (detector classes, "
                            f"background included) but NETWORK.VLBERT.visual_region_classes is {num_classes}; set "
                            f"the key to {record['classes'].shape[1]} (data/extract_boxes.py prints it)")


def spread(items: list, count: int) -> list:
    """Up to `count` items evenly spaced over the list (deterministic)."""
    if len(items) <= count:
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


# ---- network weights -------------------------------------------------------------------------------------------
def check_network(cfg: ConfigNode, out: Problems, bert_folder: bool = True) -> None:
    """Weight files; the BERT_MODEL_NAME folder (which the loader may skip, training from scratch) if `bert_folder`."""
    net = cfg.NETWORK
    vocab_size = net.VLBERT.vocab_size
    if net.BERT_PRETRAINED:
        out.need(f"{net.BERT_PRETRAINED}-{int(net.BERT_PRETRAINED_EPOCH):04d}.model",
                 "NETWORK.BERT_PRETRAINED/BERT_PRETRAINED_EPOCH")
    elif bert_folder and not net.VLBERT.get("from_scratch", False):  # from_scratch: a pretraining-only key
        name = net.BERT_MODEL_NAME
        if out.need(name, "NETWORK.BERT_MODEL_NAME", "BERT folder") and os.path.isdir(name):
            weights = [n for n in ("model.safetensors", "pytorch_model.bin") if os.path.isfile(os.path.join(name, n))]
            if not weights:
                out.append(f"no model.safetensors or pytorch_model.bin in {name} (config NETWORK.BERT_MODEL_NAME)")
            vocab = os.path.join(name, "vocab.txt")
            if out.need(vocab, "NETWORK.BERT_MODEL_NAME"):
                with open(vocab, encoding="utf-8") as f:
                    lines = sum(1 for _ in f)
                if lines != vocab_size:
                    out.append(f"{vocab}: {lines} tokens but NETWORK.VLBERT.vocab_size is {vocab_size}")
    if not net.IMAGE_FEAT_PRECOMPUTED and net.IMAGE_PRETRAINED:
        from common.model.resnet import resolve_resnet_weights_path  # the path rule FastRCNN loads by

        out.need(resolve_resnet_weights_path(net.IMAGE_PRETRAINED, int(net.IMAGE_PRETRAINED_EPOCH)),
                 "NETWORK.IMAGE_PRETRAINED/IMAGE_PRETRAINED_EPOCH")
    if net.PARTIAL_PRETRAIN:
        out.need(net.PARTIAL_PRETRAIN, "NETWORK.PARTIAL_PRETRAIN")


def check_data(cfg: ConfigNode, task: Task, samples: int = 20, bert_folder: bool = True,
               splits: tuple[str, ...] = SPLITS) -> list[str]:
    """All problems found for `task` (the network weights, then the task's own `check_data`), sampling up to
    `samples` images/box files per split; only the config sections in `splits` (TRAIN / VAL / TEST) are looked at."""
    out = Problems()
    check_network(cfg, out, bert_folder)
    if task.check_data is not None:
        try:
            task.check_data(cfg, out, samples, tuple(splits))
        except Exception as err:  # noqa: BLE001 - report, do not stop: the point is one complete list
            out.append(f"check stopped early: {type(err).__name__}: {err}")
    return list(dict.fromkeys(out))


def preflight(cfg: ConfigNode, task: Task, splits: tuple[str, ...] = SPLITS) -> list[str]:
    """Cheap mode for training start: existence and parsing plus 3 samples per split in `splits` (the sections
    the run reads); [] for a task without a data check.

    The BERT_MODEL_NAME folder is left to `data/check.py`: training without it is allowed (from scratch).
    """
    if task.check_data is None:
        return []
    return check_data(cfg, task, samples=3, bert_folder=False, splits=splits)


class PreflightError(FileNotFoundError):
    """Raised at training start when data or weight files the config names are missing or broken."""


def require_data(cfg: ConfigNode, task: Task, splits: tuple[str, ...] = SPLITS) -> None:
    """Run `preflight` on `splits` and raise one error listing every problem (each also logged)."""
    problems = preflight(cfg, task, splits)
    for problem in problems:
        log.error("pre-flight: %s", problem)
    if problems:
        raise PreflightError(f"{len(problems)} data problem(s) before training {task.name} "
                             "(run data/check.py for a full check):\n" + "\n".join(f"  - {p}" for p in problems))
