"""Pretraining's pre-flight data check (`Task.check_data`): per DATASET section, the text corpus files, or the
Conceptual Captions index with a spread sample (or all) of its box files (and images, end to end), or the COCO
captions files with their images. Box files are read as the caption dataset reads them: every field finite, boxes
within `image_w` x `image_h`, `classes` of the MVRC width, `features` in precomputed mode. A DATASET.FORMAT wds
section: each split's shard pattern given and every shard present."""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from common.config import dataset_sections
from common.config_node import ConfigNode
from common.data.captions import ANNOTATION_FILES, folder_path
from common.data.file_checks import text_file_problems
from common.data.preflight import Problems, spread
from common.data.shards import expand_shards, missing_shards


def check_caption_section(ds: ConfigNode, where: str, out: Problems, samples: int | None, splits: tuple[str, ...],
                          num_classes: int | None, precomputed: bool) -> None:
    """A conceptual_captions section: its `{split}_frcnn.json` and sampled box files (and images end to end)."""
    root = ds.DATASET_PATH
    if not out.need(root, f"{where}.DATASET_PATH", "dataset folder"):
        return
    fields = ("boxes", "classes", "features") if precomputed else ("boxes", "classes")  # what the dataset reads
    resolve = lambda stored: os.path.join(root, stored if ds.ZIP_MODE else folder_path(stored))  # noqa: E731
    for split in splits:
        image_set = ds[f"{split}_IMAGE_SET"]
        if image_set not in ANNOTATION_FILES:
            continue
        rows = out.jsonl_file(os.path.join(root, ANNOTATION_FILES[image_set]), f"{where}.{split}_IMAGE_SET")
        for row in spread(rows, samples):
            if not isinstance(row, dict):
                continue
            if not precomputed and isinstance(row.get("image"), str):
                out.image(resolve(row["image"]), f"{where}.DATASET_PATH")
            if isinstance(row.get("frcnn"), str):
                # an image without detections still trains its caption (ConceptualCaptionsDataset)
                out.box_file(resolve(row["frcnn"]), f"{where}.DATASET_PATH", num_classes=num_classes,
                             allow_empty=True, require_features=precomputed, fields=fields)


def check_coco_captions_section(ds: ConfigNode, where: str, out: Problems, samples: int | None,
                                splits: tuple[str, ...]) -> None:
    """A coco_captions section: `annotations/{captions,instances}_<set>2017.json` and the images with both."""
    root = ds.DATASET_PATH
    if not out.need(root, f"{where}.DATASET_PATH", "dataset folder"):
        return
    for split in splits:
        image_set = str(ds[f"{split}_IMAGE_SET"])
        image_set = image_set if image_set.endswith("2017") else f"{image_set}2017"
        key = f"{where}.{split}_IMAGE_SET"
        captions = out.json_file(os.path.join(root, "annotations", f"captions_{image_set}.json"), key,
                                 ("annotations",))
        instances = out.json_file(os.path.join(root, "annotations", f"instances_{image_set}.json"), key,
                                  ("images", "annotations", "categories"))
        if not captions or not instances:
            continue
        used = ({a.get("image_id") for a in instances["annotations"] if isinstance(a, dict)}
                & {a.get("image_id") for a in captions["annotations"] if isinstance(a, dict)})
        files = sorted(im["file_name"] for im in instances["images"]
                       if isinstance(im, dict) and im.get("id") in used and "file_name" in im)
        for name in spread(files, samples):
            out.image(os.path.join(root, image_set, name), key)


def shard_problems(section, splits: tuple[str, ...], where: str = "DATASET") -> list[str]:
    """Pre-flight problems of a FORMAT wds dataset section: each split's `{SPLIT}_SHARDS` given and every shard
    present (the first few missing ones named)."""
    problems = []
    for split in splits:
        key = f"{where}.{split}_SHARDS"
        try:
            shards = expand_shards(section.get(f"{split}_SHARDS", ""), section.get("DATASET_PATH", ""), key)
        except ValueError as err:
            problems.append(str(err))
            continue
        missing = missing_shards(shards)
        problems += [f"shard not found: {path} (config {key})" for path in missing[:5]]
        if len(missing) > 5:
            problems.append(f"... and {len(missing) - 5} more of the {len(shards)} shards of {key}")
    return problems


def sections_reading_files(sections: list, splits: tuple[str, ...], problems: list) -> Iterator[tuple[int, Any]]:
    """(index, section) of the dataset sections that read files; the pre-flight problems of the FORMAT wds ones
    (`shard_problems`) are appended to `problems` instead."""
    for i, section in enumerate(sections):
        if section.get("FORMAT", "files") == "wds":
            problems.extend(shard_problems(section, splits, f"DATASET[{i}]"))
        else:
            yield i, section


def check_pretrain_data(cfg: ConfigNode, out: Problems, samples: int | None, splits: tuple[str, ...]) -> None:
    """Every DATASET section: general_corpus files, conceptual_captions or coco_captions files, or (others) the
    dataset folder; a FORMAT wds section: its shard patterns and every shard present (`shard_problems`)."""
    net = cfg.NETWORK
    num_classes = int(net.VLBERT.visual_region_classes) if net.WITH_MVRC_LOSS else None
    for i, ds in sections_reading_files(dataset_sections(cfg), splits, out):  # FORMAT wds sections checked there
        where = f"DATASET[{i}]"
        if ds.DATASET == "general_corpus":
            for split in splits:
                for path in [p for p in str(ds[f"{split}_ANNOTATION_FILE"]).split("+") if p]:
                    out.check(text_file_problems, path, f"{where}.{split}_ANNOTATION_FILE")
        elif ds.DATASET == "conceptual_captions":
            check_caption_section(ds, where, out, samples, splits, num_classes, bool(net.IMAGE_FEAT_PRECOMPUTED))
        elif ds.DATASET == "coco_captions":
            check_coco_captions_section(ds, where, out, samples, splits)
        else:
            out.need(ds.DATASET_PATH, f"{where}.DATASET_PATH", "dataset folder")
