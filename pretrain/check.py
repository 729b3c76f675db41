"""Pretraining's pre-flight data check (`Task.check_data`): per DATASET section, the text corpus files or the
Conceptual Captions index with a spread sample of its images and box files."""
from __future__ import annotations

import functools
import os

from common.config import dataset_sections
from common.config_node import ConfigNode
from common.data.captions import ANNOTATION_FILES, folder_path
from common.data.preflight import Problems, spread


def check_caption_section(ds: ConfigNode, where: str, out: Problems, samples: int, splits: tuple[str, ...],
                          num_classes: int | None) -> None:
    """A conceptual_captions section: its `{split}_frcnn.json` and sampled images + box files (MVRC width)."""
    root = ds.DATASET_PATH
    if not out.need(root, f"{where}.DATASET_PATH", "dataset folder"):
        return
    # an image without detections still trains its caption (ConceptualCaptionsDataset)
    box_file = functools.partial(out.box_file, num_classes=num_classes, allow_empty=True)
    for split in splits:
        image_set = ds[f"{split}_IMAGE_SET"]
        if image_set not in ANNOTATION_FILES:
            continue
        rows = out.jsonl_file(os.path.join(root, ANNOTATION_FILES[image_set]), f"{where}.{split}_IMAGE_SET")
        for row in spread(rows, samples):
            for field, check in (("image", out.image), ("frcnn", box_file)):
                if isinstance(row, dict) and isinstance(row.get(field), str):
                    stored = row[field]
                    check(os.path.join(root, stored if ds.ZIP_MODE else folder_path(stored)), f"{where}.DATASET_PATH")


def check_pretrain_data(cfg: ConfigNode, out: Problems, samples: int, splits: tuple[str, ...]) -> None:
    """Every DATASET section: general_corpus files, conceptual_captions files, or (others) the dataset folder."""
    net = cfg.NETWORK
    num_classes = int(net.VLBERT.visual_region_classes) if net.WITH_MVRC_LOSS else None
    for i, ds in enumerate(dataset_sections(cfg)):
        where = f"DATASET[{i}]"
        if ds.DATASET == "general_corpus":
            for split in splits:
                for path in [p for p in str(ds[f"{split}_ANNOTATION_FILE"]).split("+") if p]:
                    out.need(path, f"{where}.{split}_ANNOTATION_FILE")
        elif ds.DATASET == "conceptual_captions":
            check_caption_section(ds, where, out, samples, splits, num_classes)
        else:
            out.need(ds.DATASET_PATH, f"{where}.DATASET_PATH", "dataset folder")
