"""Where the training log's records go: `metrics.jsonl` beside the checkpoints (always, rank 0), TensorBoard
(TRAIN.REPORT_TO `tensorboard`, the default), and the optional `wandb` / `trackio` sinks, imported only when named.

A record is a plain dict with a "kind": "run" (the header written at every start, a resumed run included), "train"
(one per LOG_FREQUENT step), "epoch_train" and "val" (one per validation), "step_val" (one per in-loop validation,
TRAIN.VAL_EVERY_STEPS). `read_metrics` reads the file back.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
REPORT_TO_CHOICES = ("tensorboard", "wandb", "trackio")
SPEED_FIELDS = ("samples_per_s", "tflops", "mfu", "data_wait", "peak_mem_gib")
# TensorBoard tag of each speed figure (Speed/samples_per_s is the name the log has always used).
SPEED_TAGS = {"samples_per_s": "Speed/samples_per_s", "tflops": "Speed/tflops_per_device", "mfu": "Speed/mfu",
              "data_wait": "Speed/data_wait_share", "peak_mem_gib": "Memory/peak_gib"}


class MetricsFile:
    """Appends one JSON line per record and flushes it, so a crash loses at most the line being written; a resumed
    run appends to the same file (after a new "run" header)."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._file = open(path, "a+", encoding="utf-8")
        if self._file.tell() > 0:  # a line cut by a crash must not swallow the next record
            self._file.seek(self._file.tell() - 1)
            if self._file.read(1) != "\n":
                self._file.write("\n")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardSink:
    """The scalar names the training log has always written (Train-*, LR/Group_*, Epoch-Train-*, Val-*) plus the
    speed figures (SPEED_TAGS)."""

    def __init__(self, log_dir: str):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(log_dir=log_dir)

    def write(self, record: dict[str, Any]) -> None:
        kind, metrics = record["kind"], record.get("metrics", {})
        if kind == "train":
            step = record["step"]
            for name, value in metrics.items():
                self.writer.add_scalar(f"Train-{name}", value, step)
            for i, lr in enumerate(record.get("lr", [])):
                self.writer.add_scalar(f"LR/Group_{i}", lr, step)
            for field, tag in SPEED_TAGS.items():
                if record.get(field) is not None:
                    self.writer.add_scalar(tag, record[field], step)
        elif kind == "step_val":  # in-loop validation (TRAIN.VAL_EVERY_STEPS), by global step
            for name, value in metrics.items():
                self.writer.add_scalar(f"Step-Val-{name}", value, record["step"])
        elif kind in ("epoch_train", "val"):
            prefix = "Epoch-Train" if kind == "epoch_train" else "Val"
            for name, value in metrics.items():
                self.writer.add_scalar(f"{prefix}-{name}", value, record["epoch"] + 1)

    def close(self) -> None:
        self.writer.close()


def flat_scalars(record: dict[str, Any]) -> dict[str, float]:
    """A train/val record as {"train/Loss": ..., "train/mfu": ..., "val/Acc": ...} for the step-indexed sinks."""
    kind = record["kind"]
    out = {f"{kind}/{name}": value for name, value in record.get("metrics", {}).items()}
    out.update({f"{kind}/{field}": record[field] for field in SPEED_FIELDS if record.get(field) is not None})
    out.update({f"{kind}/lr_group_{i}": lr for i, lr in enumerate(record.get("lr", []))})
    if "epoch" in record:
        out["epoch"] = record["epoch"]
    return out


def import_reporter(name: str) -> Any:
    """The wandb / trackio module, with an error that says how to get it when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise RuntimeError(f"TRAIN.REPORT_TO names {name!r} but the {name} package is not installed "
                           f"(pip install {name}), or drop it from TRAIN.REPORT_TO") from err


class WandbSink:
    """Weights & Biases; offline with WANDB_MODE=offline (files under the output folder, `wandb sync` later)."""

    def __init__(self, out_dir: str, run_name: str, config: dict[str, Any]):
        wandb = import_reporter("wandb")
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "vl-bert"), name=run_name, dir=out_dir,
                              config=config)

    def write(self, record: dict[str, Any]) -> None:
        if record["kind"] in ("train", "val", "epoch_train", "step_val"):
            self.run.log(flat_scalars(record), step=record["step"])

    def close(self) -> None:
        self.run.finish()


class TrackioSink:
    """trackio: local by default (a SQLite file under ~/.cache/huggingface/trackio), a dashboard with `trackio show`."""

    def __init__(self, out_dir: str, run_name: str, config: dict[str, Any]):
        self.trackio = import_reporter("trackio")
        self.trackio.init(project=os.environ.get("TRACKIO_PROJECT", "vl-bert"), name=run_name, config=config)

    def write(self, record: dict[str, Any]) -> None:
        if record["kind"] in ("train", "val", "epoch_train", "step_val"):
            self.trackio.log(flat_scalars(record), step=record["step"])

    def close(self) -> None:
        self.trackio.finish()


def check_report_to(report_to: Sequence[str]) -> list[str]:
    names = [str(name).lower() for name in report_to]
    unknown = [name for name in names if name not in REPORT_TO_CHOICES]
    if unknown:
        raise ValueError(f"TRAIN.REPORT_TO: unknown sink(s) {unknown}; expected any of {list(REPORT_TO_CHOICES)}")
    return names


def build_sinks(report_to: Sequence[str], out_dir: str, tensorboard_dir: str, run_name: str,
                config: dict[str, Any]) -> list[Any]:
    """metrics.jsonl first, then the sinks TRAIN.REPORT_TO names (rank 0 only: the caller decides)."""
    sinks: list[Any] = [MetricsFile(os.path.join(out_dir, METRICS_FILE))]
    for name in check_report_to(report_to):
        if name == "tensorboard":
            sinks.append(TensorBoardSink(tensorboard_dir))
        elif name == "wandb":
            sinks.append(WandbSink(out_dir, run_name, config))
        else:
            sinks.append(TrackioSink(out_dir, run_name, config))
    return sinks


def read_metrics(path: str, kinds: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file in order (of `kinds` only, when given). A last line cut by a crash is
    skipped with a warning; a bad line elsewhere is an error naming the file and line."""
    wanted = set(kinds) if kinds is not None else None
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if any(rest.strip() for rest in lines[number:]):
                raise ValueError(f"{path}:{number}: not a JSON record ({err})") from err
            log.warning("%s:%d: skipped a last line cut short (%s)", path, number, err)
            continue
        if wanted is None or record.get("kind") in wanted:
            records.append(record)
    return records


def latest_by_step(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records of one kind with one per step: a resumed run repeats the steps after its checkpoint, and its records
    (written later) replace the earlier ones. Sorted by step."""
    by_step = {}
    for record in records:
        by_step[record["step"]] = record
    return [by_step[step] for step in sorted(by_step)]
