"""Pre-flight data check: every file and folder a config will read exists and parses, reported as one list.

Each problem names the file and the config key that points at it. `preflight` is the cheap mode (existence plus
a handful of samples) that training start runs; `data/check.py` runs `check_data` with a larger sample.
"""
from __future__ import annotations

import functools
import json
import logging
import os
from types import SimpleNamespace

from common.data.box_files import read_box_file
from common.data.image_io import open_image, path_exists
from common.data.shards import sections_reading_files

log = logging.getLogger(__name__)
TASKS = ("vqa", "vcr", "refcoco", "pretrain")
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
def check_network(cfg, out: Problems, bert_folder: bool = True) -> None:
    """Weight files; the BERT_MODEL_NAME folder (which the loader may skip, training from scratch) if `bert_folder`."""
    net = cfg.NETWORK
    vocab_size = (net.get("VLBERT") or {}).get("vocab_size")
    if net.get("BERT_PRETRAINED"):
        out.need(f"{net.BERT_PRETRAINED}-{int(net.get('BERT_PRETRAINED_EPOCH', 0)):04d}.model",
                 "NETWORK.BERT_PRETRAINED/BERT_PRETRAINED_EPOCH")
    elif bert_folder and not (net.get("VLBERT") or {}).get("from_scratch", False):
        name = net.get("BERT_MODEL_NAME", "")
        if out.need(name, "NETWORK.BERT_MODEL_NAME", "BERT folder") and os.path.isdir(name):
            weights = [n for n in ("model.safetensors", "pytorch_model.bin") if os.path.isfile(os.path.join(name, n))]
            if not weights:
                out.append(f"no model.safetensors or pytorch_model.bin in {name} (config NETWORK.BERT_MODEL_NAME)")
            vocab = os.path.join(name, "vocab.txt")
            if out.need(vocab, "NETWORK.BERT_MODEL_NAME"):
                with open(vocab, encoding="utf-8") as f:
                    lines = sum(1 for _ in f)
                if vocab_size is not None and lines != vocab_size:
                    out.append(f"{vocab}: {lines} tokens but NETWORK.VLBERT.vocab_size is {vocab_size}")
    if not net.get("IMAGE_FEAT_PRECOMPUTED", False) and net.get("IMAGE_PRETRAINED"):
        from common.model.resnet import resolve_resnet_weights_path  # the path rule FastRCNN loads by

        out.need(resolve_resnet_weights_path(net.IMAGE_PRETRAINED, int(net.get("IMAGE_PRETRAINED_EPOCH", 0))),
                 "NETWORK.IMAGE_PRETRAINED/IMAGE_PRETRAINED_EPOCH")
    if net.get("PARTIAL_PRETRAIN"):
        out.need(net.PARTIAL_PRETRAIN, "NETWORK.PARTIAL_PRETRAIN")


# ---- tasks -----------------------------------------------------------------------------------------------------
def check_vqa(cfg, out: Problems, samples: int, splits: tuple[str, ...] = SPLITS) -> None:
    from vqa.dataset import IMAGE_SETS, UNK, VQADataset

    ds = cfg.DATASET
    root = ds.DATASET_PATH
    if not out.need(root, "DATASET.DATASET_PATH", "dataset folder"):
        return
    vocab = ds.get("ANSWER_VOCAB_FILE", "")
    if out.need(vocab, "DATASET.ANSWER_VOCAB_FILE"):
        with open(vocab, encoding="utf-8") as f:
            answers = [line.strip().lower() for line in f if line.strip()]
        if UNK not in answers:
            out.append(f"{vocab}: no {UNK} line (config DATASET.ANSWER_VOCAB_FILE)")
        if len(answers) != ds.ANSWER_VOCAB_SIZE:
            out.append(f"{vocab}: {len(answers)} answers but DATASET.ANSWER_VOCAB_SIZE is {ds.ANSWER_VOCAB_SIZE}")
    paths = SimpleNamespace(data_path=root, zip_mode=bool(ds.get("ZIP_MODE", False)), boxes=str(ds.get("BOXES")))
    for split in splits:
        key = f"DATASET.{split}_IMAGE_SET"
        for name in [n for n in str(ds.get(f"{split}_IMAGE_SET", "")).split("+") if n]:
            if name not in IMAGE_SETS:
                out.append(f"unknown VQA image set {name!r} (config {key})")
                continue
            questions = out.json_file(os.path.join(root, "vqa", f"v2_OpenEnded_mscoco_{name}_questions.json"),
                                      f"DATASET.DATASET_PATH + {key}", ("questions",))
            if not name.startswith("test"):
                out.json_file(os.path.join(root, "vqa", f"v2_mscoco_{name}_annotations.json"),
                              f"DATASET.DATASET_PATH + {key}", ("annotations",))
            out.json_file(os.path.join(root, IMAGE_SETS[name][1]), f"DATASET.DATASET_PATH + {key}", ("images",))
            images = sorted({q.get("image_id") for q in (questions or {}).get("questions", []) if isinstance(q, dict)}
                            - {None})
            for image_id in spread(images, samples):
                sample = SimpleNamespace(image_set=name, image_id=image_id)
                out.image(VQADataset.image_path(paths, sample), f"DATASET.DATASET_PATH + {key}")
                out.box_file(VQADataset.box_file_path(paths, sample), "DATASET.DATASET_PATH + DATASET.BOXES")


def check_vcr(cfg, out: Problems, samples: int, splits: tuple[str, ...] = SPLITS) -> None:
    ds = cfg.DATASET
    root = ds.DATASET_PATH
    if not out.need(root, "DATASET.DATASET_PATH", "dataset folder"):
        return
    for split in splits:
        key = f"DATASET.{split}_ANNOTATION_FILE"
        rows = out.jsonl_file(os.path.join(root, ds.get(f"{split}_ANNOTATION_FILE", "")), key)
        image_root = os.path.join(root, ds.get(f"{split}_IMAGE_SET", ""))
        for row in spread(rows, samples):
            if isinstance(row, dict) and "img_fn" in row:
                out.image(os.path.join(image_root, row["img_fn"]), f"DATASET.{split}_IMAGE_SET")
                out.need(os.path.join(image_root, row.get("metadata_fn", "")), f"DATASET.{split}_IMAGE_SET")


def check_refcoco(cfg, out: Problems, samples: int, splits: tuple[str, ...] = SPLITS) -> None:
    from refcoco.dataset import DETECTIONS_FILE, VG_BOX_FOLDER, image_path

    root = cfg.DATASET.DATASET_PATH
    if not out.need(root, "DATASET.DATASET_PATH", "dataset folder"):
        return
    out.need(os.path.join(root, "refcoco+", "refs(unc).p"), "DATASET.DATASET_PATH")
    instances = out.json_file(os.path.join(root, "annotations", "instances_train2014.json"), "DATASET.DATASET_PATH",
                              ("images", "annotations"))
    out.json_file(os.path.join(root, DETECTIONS_FILE), "DATASET.DATASET_PATH")
    zip_mode = bool(cfg.DATASET.get("ZIP_MODE", False))
    for image in spread((instances or {}).get("images", []), samples):
        out.image(image_path(root, image["id"], zip_mode), "DATASET.DATASET_PATH")
        if cfg.NETWORK.get("IMAGE_FEAT_PRECOMPUTED", False):
            out.box_file(os.path.join(root, VG_BOX_FOLDER, f"{image['id']}.json"), "DATASET.DATASET_PATH")


def check_pretrain(cfg, out: Problems, samples: int, splits: tuple[str, ...] = SPLITS) -> None:
    from common.config import dataset_sections
    from pretrain.datasets.conceptual_captions import ANNOTATION_FILES, folder_path

    net = cfg.NETWORK
    num_classes = int(net.VLBERT.visual_region_classes) if net.get("WITH_MVRC_LOSS", False) else None
    for i, ds in sections_reading_files(dataset_sections(cfg), splits, out):  # shard sections checked there
        where = f"DATASET[{i}]"
        if ds.DATASET == "general_corpus":
            for split in splits:
                for path in [p for p in str(ds.get(f"{split}_ANNOTATION_FILE", "")).split("+") if p]:
                    out.need(path, f"{where}.{split}_ANNOTATION_FILE")
        elif ds.DATASET == "conceptual_captions":
            root = ds.DATASET_PATH
            if not out.need(root, f"{where}.DATASET_PATH", "dataset folder"):
                continue
            for split in splits:
                image_set = ds.get(f"{split}_IMAGE_SET", "")
                if image_set in ANNOTATION_FILES:
                    rows = out.jsonl_file(os.path.join(root, ANNOTATION_FILES[image_set]),
                                          f"{where}.{split}_IMAGE_SET")
                    zip_mode = bool(ds.get("ZIP_MODE", False))
                    # an image without detections still trains its caption (ConceptualCaptionsDataset)
                    box_file = functools.partial(out.box_file, num_classes=num_classes, allow_empty=True)
                    for row in spread(rows, samples):
                        for field, check in (("image", out.image), ("frcnn", box_file)):
                            if isinstance(row, dict) and isinstance(row.get(field), str):
                                stored = row[field]
                                check(os.path.join(root, stored if zip_mode else folder_path(stored)),
                                      f"{where}.DATASET_PATH")
        else:
            out.need(ds.get("DATASET_PATH", ""), f"{where}.DATASET_PATH", "dataset folder")


CHECKS = {"vqa": check_vqa, "vcr": check_vcr, "refcoco": check_refcoco, "pretrain": check_pretrain}


def check_data(cfg, task_name: str, samples: int = 20, bert_folder: bool = True,
               splits: tuple[str, ...] = SPLITS) -> list[str]:
    """All problems found for `task_name` (one of TASKS), sampling up to `samples` images/box files per split;
    only the config sections in `splits` (TRAIN / VAL / TEST) are looked at."""
    if task_name not in CHECKS:
        raise ValueError(f"unknown task {task_name!r}; expected one of {TASKS}")
    out = Problems()
    check_network(cfg, out, bert_folder)
    try:
        CHECKS[task_name](cfg, out, samples, tuple(splits))
    except Exception as err:  # noqa: BLE001 - report, do not stop: the point is one complete list
        out.append(f"check stopped early: {type(err).__name__}: {err}")
    return list(dict.fromkeys(out))


def preflight(cfg, task_name: str, splits: tuple[str, ...] = SPLITS) -> list[str]:
    """Cheap mode for training start: existence and parsing plus 3 samples per split in `splits` (the sections
    the run reads); [] for other tasks.

    The BERT_MODEL_NAME folder is left to `data/check.py`: training without it is allowed (from scratch).
    """
    if task_name not in CHECKS:
        return []
    return check_data(cfg, task_name, samples=3, bert_folder=False, splits=splits)


class PreflightError(FileNotFoundError):
    """Raised at training start when data or weight files the config names are missing or broken."""


def require_data(cfg, task_name: str, splits: tuple[str, ...] = SPLITS) -> None:
    """Run `preflight` on `splits` and raise one error listing every problem (each also logged)."""
    problems = preflight(cfg, task_name, splits)
    for problem in problems:
        log.error("pre-flight: %s", problem)
    if problems:
        raise PreflightError(f"{len(problems)} data problem(s) before training {task_name} "
                             "(run data/check.py for a full check):\n" + "\n".join(f"  - {p}" for p in problems))
