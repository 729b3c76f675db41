"""VCR's pre-flight data check (`Task.check_data`): the annotation jsonl of every split the run reads, and a
spread sample of its images and metadata files."""
from __future__ import annotations

import os

from common.config_node import ConfigNode
from common.data.preflight import Problems, spread


def check_vcr_data(cfg: ConfigNode, out: Problems, samples: int, splits: tuple[str, ...]) -> None:
    """`DATASET.<SPLIT>_ANNOTATION_FILE` parses line by line; sampled `img_fn` / `metadata_fn` exist."""
    ds = cfg.DATASET
    root = ds.DATASET_PATH
    if not out.need(root, "DATASET.DATASET_PATH", "dataset folder"):
        return
    for split in splits:
        key = f"DATASET.{split}_ANNOTATION_FILE"
        rows = out.jsonl_file(os.path.join(root, ds[f"{split}_ANNOTATION_FILE"]), key)
        image_root = os.path.join(root, ds[f"{split}_IMAGE_SET"])
        for row in spread(rows, samples):
            if isinstance(row, dict) and "img_fn" in row:
                out.image(os.path.join(image_root, row["img_fn"]), f"DATASET.{split}_IMAGE_SET")
                out.need(os.path.join(image_root, row.get("metadata_fn", "")), f"DATASET.{split}_IMAGE_SET")
