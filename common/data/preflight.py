"""Pre-flight data check: every file and folder a config will read exists and parses, reported as one list.

Each problem names the file and the config key that points at it. The generic pieces live here (`Problems`, the
network weights, sampling); each task's own check is its `Task.check_data` (e.g. `vqa/check.py`). `preflight` is
the cheap mode (existence plus a handful of samples) that training start runs; `data/check.py` runs `check_data`
with a larger sample, or with every file (`samples=None`) in worker processes.

Annotation files are read in this process (they say which images and box files exist); the per-file checks of
images and box files (`common/data/file_checks.py`) are queued by `Problems.image` / `Problems.box_file` /
`Problems.check` and run together, in parallel when asked, at the end of `check_data`.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from common.config_node import ConfigNode
from common.data.file_checks import FileCheck, box_file_problems, image_problems, run_file_checks
from common.data.image_io import path_exists

if TYPE_CHECKING:  # the Task value names its check with `Problems`; annotations only
    from common.engine.task import Task

log = logging.getLogger(__name__)
SPLITS = ("TRAIN", "VAL", "TEST")
MAX_BAD_LINES = 20  # broken lines named per JSON-lines file; the rest are counted


class Problems(list):
    """A list of problem lines with helpers that never raise.

    Per-file checks (`image`, `box_file`, `check`) run at once, or, with `deferred`, are queued in `checks` for
    `run_checks` (which `check_data` calls, in worker processes when asked). A file that two config sections name
    (VAL and TEST reading the same index, say) is read and reported once.
    """

    def __init__(self, deferred: bool = False):
        super().__init__()
        self.deferred = deferred
        self.checks: list[FileCheck] = []
        self._seen: set[str] = set()  # checks queued or run
        self._parsed: dict[tuple, object] = {}  # annotation file -> what json_file / jsonl_records returned

    def check(self, function: Callable[..., list[str]], *args, **kwargs) -> None:
        """Run (or queue) `function(*args, **kwargs) -> problem lines`; the function must be importable."""
        job = FileCheck(function, args, kwargs)
        signature = repr((function.__module__, function.__qualname__, args, sorted(kwargs.items())))
        if signature in self._seen:
            return
        self._seen.add(signature)
        if self.deferred:
            self.checks.append(job)
        else:
            self.extend(job())

    def run_checks(self, workers: int = 1, progress: bool = False) -> None:
        """Run the queued checks and add their problems."""
        checks, self.checks = self.checks, []
        self.extend(run_file_checks(checks, workers, progress))

    def need(self, path: str, key: str, what: str = "file") -> bool:
        if path and (os.path.isdir(path) or path_exists(path)):
            return True
        self.append(f"{what} not found: {path or '<empty>'} (config {key})")
        return False

    def json_file(self, path: str, key: str, top_keys: tuple[str, ...] = ()) -> object | None:
        """A JSON file parsed (once per path), with the `top_keys` of its object; None (reported) otherwise."""
        if ("json", path, top_keys) not in self._parsed:
            self._parsed["json", path, top_keys] = self._read_json(path, key, top_keys)
        return self._parsed["json", path, top_keys]

    def _read_json(self, path: str, key: str, top_keys: tuple[str, ...]) -> object | None:
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

    def jsonl_records(self, path: str, key: str) -> list[tuple[int, object]]:
        """(line number, parsed line) of every non-empty line of a JSON-lines file: every line is read (a broken
        line hours in is what this check is for), each broken line reported (the first MAX_BAD_LINES by number,
        then a count). A file is read (and reported) once."""
        if ("jsonl", path) not in self._parsed:
            self._parsed["jsonl", path] = self._read_jsonl(path, key)
        return self._parsed["jsonl", path]  # type: ignore[return-value]

    def _read_jsonl(self, path: str, key: str) -> list[tuple[int, object]]:
        if not self.need(path, key):
            return []
        rows, bad = [], 0
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append((number, json.loads(line)))
                except ValueError as err:
                    bad += 1
                    if bad <= MAX_BAD_LINES:
                        self.append(f"{path}:{number}: not valid JSON ({err}) (config {key})")
        if bad > MAX_BAD_LINES:
            self.append(f"{path}: {bad - MAX_BAD_LINES} more broken line(s) (config {key})")
        if not rows and not bad:
            self.append(f"{path}: no records (config {key})")
        return rows

    def jsonl_file(self, path: str, key: str, limit: int | None = None) -> list:
        """The parsed lines of a JSON-lines file (the first `limit`), every line checked (`jsonl_records`)."""
        return [row for _, row in self.jsonl_records(path, key)][:limit]

    def image(self, path: str, key: str) -> None:
        """The image exists and decodes completely."""
        self.check(image_problems, path, key)

    def box_file(self, path: str, key: str, num_classes: int | None = None, allow_empty: bool = False,
                 **rules) -> None:
        """The fields read (`rules["fields"]`, default the boxes, and `classes` with `num_classes`) decode and are
        finite, the boxes fit the image; has boxes (unless `allow_empty`); with `num_classes`, also `classes`
        [N, num_classes] (the MVRC target). `rules`: see `box_file_problems`."""
        rules.setdefault("fields", ("classes",) if num_classes else ())
        self.check(box_file_problems, path, key, min_boxes=0 if allow_empty else 1, num_classes=num_classes,
                   **rules)


def spread(items: list, count: int | None) -> list:
    """Up to `count` items evenly spaced over the list (deterministic); every item when `count` is None."""
    if count is None or len(items) <= count:
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


def check_data(cfg: ConfigNode, task: Task, samples: int | None = 20, bert_folder: bool = True,
               splits: tuple[str, ...] = SPLITS, workers: int = 1, progress: bool = False) -> list[str]:
    """All problems found for `task` (the network weights, then the task's own `check_data`), checking up to
    `samples` images/box files per split (every one when None) in `workers` processes; only the config sections
    in `splits` (TRAIN / VAL / TEST) are looked at."""
    out = Problems(deferred=True)
    check_network(cfg, out, bert_folder)
    if task.check_data is not None:
        try:
            task.check_data(cfg, out, samples, tuple(splits))
        except Exception as err:  # noqa: BLE001 - report, do not stop: the point is one complete list
            out.append(f"check stopped early: {type(err).__name__}: {err}")
    out.run_checks(workers, progress)
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
