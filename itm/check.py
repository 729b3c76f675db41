"""Image-text matching's pre-flight data check (`Task.check_data`): the Conceptual Captions index of every split
the run reads, and a spread sample (or all) of its box files, which must carry the precomputed features the task
reads, every field finite and the boxes within the stored image size."""
from __future__ import annotations

import os

from common.config_node import ConfigNode
from common.data.box_files import validate_box_file
from common.data.captions import ANNOTATION_FILES, folder_path
from common.data.image_io import path_exists
from common.data.preflight import Problems, spread

READ_FIELDS = ("boxes", "classes", "features")  # what ITMDataset reads from every box file


def feature_box_file_problems(path: str, key: str) -> list[str]:
    """Exists, every field decodes and is finite, and holds `classes` and `features` (an image without detections
    is allowed)."""
    if not path_exists(path):
        return [f"box file not found: {path} (config {key})"]
    try:
        record = validate_box_file(path, fields=READ_FIELDS)
    except Exception as err:  # noqa: BLE001 - any decoding error is a problem to report
        return [f"box file does not read: {path} ({err}) (config {key})"]
    missing = [field for field in READ_FIELDS if field not in record]
    if missing:
        return [f"box file {path} lacks {missing}: image-text matching reads precomputed features (config {key})"]
    return []


def check_itm_data(cfg: ConfigNode, out: Problems, samples: int | None, splits: tuple[str, ...]) -> None:
    """`{split}_frcnn.json` of DATASET.<SPLIT>_IMAGE_SET parses; its sampled (or all) box files hold features."""
    ds = cfg.DATASET
    root = ds.DATASET_PATH
    if not out.need(root, "DATASET.DATASET_PATH", "dataset folder"):
        return
    for split in splits:
        key = f"DATASET.{split}_IMAGE_SET"
        image_set = ds[f"{split}_IMAGE_SET"]
        if image_set not in ANNOTATION_FILES:
            out.append(f"unknown image-text matching image set {image_set!r}: expected one of "
                       f"{sorted(ANNOTATION_FILES)} (config {key})")
            continue
        rows = out.jsonl_file(os.path.join(root, ANNOTATION_FILES[image_set]), key)
        for row in spread(rows, samples):
            if isinstance(row, dict) and isinstance(row.get("frcnn"), str):
                stored = row["frcnn"]
                out.check(feature_box_file_problems,
                          os.path.join(root, stored if ds.ZIP_MODE else folder_path(stored)), "DATASET.DATASET_PATH")
