"""Conceptual Captions as VL-BERT consumes it: `{split}_frcnn.json` (JSON lines of image path, caption words and
bottom-up box-file path), read from folders or from stored zips (`train_image.zip@/00000042.jpg`)."""
from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Dataset

from common.data.box_files import read_box_file
from common.data.image_io import ImageReadError, open_image
from common.data.masking import EpochSeeded
from common.data.packed_strings import PackedStrings, PackedStringsBuilder
from pretrain.datasets.caption_sample import (
    CAPTION_PAD_RULES,
    CaptionSampleBuilder,
    RawCaptionSample,
    detector_regions,
    raw_caption_sample,
)

log = logging.getLogger(__name__)

ANNOTATION_FILES = {"train": "train_frcnn.json", "val": "val_frcnn.json"}
# "train_frcnn.2.zip@/x.json": archive stem, optional shard number, member
_ZIP_PATH = re.compile(r"^(?P<stem>.*?)(?P<shard>\.\d+)?\.zip@/?(?P<member>.*)$")


def folder_path(zip_style: str) -> str:
    """'train_frcnn.1.zip@/00000042.json' -> 'train_frcnn/00000042.json' (the folder layout of the same files).

    Only a numeric shard suffix right before `.zip@` is removed (the original removed every '.0'-'.3' substring).
    """
    match = _ZIP_PATH.match(zip_style)
    if match is None:
        return zip_style
    return f"{match['stem']}/{match['member']}"


class CaptionIndex:
    """The records of a `{split}_frcnn.json` file as three packed string columns (image path, caption words as a
    JSON list, box-file path): no Python object per record, so loader workers do not copy it page by page.
    `index[i]` gives the record as a dict {"image", "caption" (list of str), "frcnn"}."""

    FIELDS = ("image", "caption", "frcnn")

    def __init__(self, columns: dict[str, PackedStrings], path: str):
        self.columns, self.path = columns, path

    def __len__(self) -> int:
        return len(self.columns["image"])

    def __getitem__(self, index: int) -> dict:
        return {"image": self.columns["image"][index], "caption": self.caption(index),
                "frcnn": self.columns["frcnn"][index]}

    def __iter__(self) -> Iterator[dict]:
        return (self[i] for i in range(len(self)))

    def caption(self, index: int) -> list[str]:
        return json.loads(self.columns["caption"][index])


def read_caption_index(path: str) -> CaptionIndex:
    """Parse the JSON lines of `path` one at a time into a CaptionIndex; every object needs `image`, `caption` (a
    list of words) and `frcnn`. Errors name file and line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file not found: {path}")
    builders = {field: PackedStringsBuilder() for field in CaptionIndex.FIELDS}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not a JSON object ({err})") from err
            missing = [k for k in CaptionIndex.FIELDS if k not in record]
            if missing:
                raise ValueError(f"{path}:{number}: missing keys {missing}")
            if not isinstance(record["caption"], list):
                raise ValueError(f"{path}:{number}: 'caption' must be a list of words")
            builders["image"].append(str(record["image"]))
            builders["caption"].append(json.dumps([str(w) for w in record["caption"]], ensure_ascii=False))
            builders["frcnn"].append(str(record["frcnn"]))
    if not len(builders["image"]):
        raise ValueError(f"{path}: no samples")
    return CaptionIndex({field: builder.finish() for field, builder in builders.items()}, path)


class ConceptualCaptionsDataset(EpochSeeded, Dataset):
    """Image-caption pairs with their detector boxes; items as `CaptionSampleBuilder.build`.

    End-to-end mode opens the JPEG; precomputed mode reads `features` [N, 2048] from the box file instead (box 0
    gets the mean of the visible boxes' features). Masks come from `item_rng(seed, epoch, index)`. With
    `num_classes` (NETWORK.VLBERT.visual_region_classes when MVRC is on), every box file's `classes` [N, C] must
    have C == num_classes: the MVRC head predicts that many classes.
    """

    PAD_RULES = CAPTION_PAD_RULES

    def __init__(self, data_path: str, image_set: str, builder: CaptionSampleBuilder, precomputed: bool = False,
                 zip_mode: bool = False, seed: int = 0, skip_unreadable_images: bool = False,
                 num_classes: int | None = None):
        if image_set not in ANNOTATION_FILES:
            raise ValueError(f"conceptual_captions: image set {image_set!r} is not one of {sorted(ANNOTATION_FILES)}")
        self.data_path, self.builder, self.precomputed, self.zip_mode = data_path, builder, precomputed, zip_mode
        self.skip_unreadable_images, self.num_classes = skip_unreadable_images, num_classes
        self.init_epoch_seed(seed)
        self.ann_file = os.path.join(data_path, ANNOTATION_FILES[image_set])
        self.records = read_caption_index(self.ann_file)

    def __len__(self) -> int:
        return len(self.records)

    def resolve(self, stored: str) -> str:
        """The stored zip-style path as a readable path under DATASET_PATH for the current mode."""
        return os.path.join(self.data_path, stored if self.zip_mode else folder_path(stored))

    def read_raw(self, index: int) -> RawCaptionSample:
        record = self.records[index]
        box_path = self.resolve(record["frcnn"])
        fields = ("boxes", "classes", "features") if self.precomputed else ("boxes", "classes")
        boxes_file = read_box_file(box_path, fields=fields)
        regions = detector_regions(boxes_file, box_path, self.num_classes, self.precomputed)
        image = None
        if not self.precomputed:
            image = self._open_image(self.resolve(record["image"]), (boxes_file.get("image_w"),
                                                                      boxes_file.get("image_h")))
        return raw_caption_sample(regions, image, boxes_file, record["caption"], box_path)

    def _open_image(self, path: str, size):
        try:
            return open_image(path)
        except (ImageReadError, FileNotFoundError) as err:
            if not self.skip_unreadable_images or size[0] is None:
                raise
            from PIL import Image

            log.warning("%s; using a zero image of %dx%d (DATASET.SKIP_UNREADABLE_IMAGES)", err, size[0], size[1])
            return Image.new("RGB", (int(size[0]), int(size[1])))

    def other_caption(self, index: int, rng: np.random.Generator) -> list[str]:
        """The caption of a uniformly drawn other sample (the relationship task's negative)."""
        other = int(rng.integers(max(len(self.records) - 1, 1)))
        other += int(other >= index and len(self.records) > 1)
        return self.records.caption(other)

    def __getitem__(self, index: int) -> dict:
        rng = self.item_rng(index)
        return self.builder.build(self.read_raw(index), index, rng, lambda r: self.other_caption(index, r))
