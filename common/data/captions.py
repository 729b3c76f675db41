"""Image-caption data shared by pretraining and image-text matching: the Conceptual Captions files
(`{split}_frcnn.json` JSON lines of image path, caption words and bottom-up box-file path, read from folders or from
stored zips such as `train_image.zip@/00000042.jpg`), the raw sample they give, and the joint text/box truncation."""
from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from common.data.box_files import BoxFileError, read_box_file
from common.data.image_io import open_image_or_blank
from common.data.masking import IGNORE_LABEL, EpochSeeded
from common.data.packed_strings import PackedStrings, PackedStringsBuilder

# collate rules of every image-caption dataset (pad value per key, None = stack)
CAPTION_PAD_RULES = {"image": 0.0, "boxes": -2.0, "box_features": 0.0, "im_info": None, "text": 0,
                     "relationship_label": None, "mlm_labels": IGNORE_LABEL, "mvrc_ops": 0, "mvrc_labels": 0.0,
                     "index": None}


@dataclass
class RawCaptionSample:
    """What a dataset reads from its files, before any corruption. Boxes are detector boxes (no whole-image box),
    in original-image pixels, sorted by confidence; classes [N, C] is the MVRC target distribution."""

    image: Image.Image | None  # None in precomputed mode
    image_size: tuple[int, int]  # (w, h) of the original image
    boxes: np.ndarray  # [N, 4]
    classes: np.ndarray  # [N, C]
    features: np.ndarray | None  # [N, D] precomputed mode only
    words: list[str]  # the caption, split into words
    source: str = ""  # the box file (or annotation) the boxes come from, for messages


def sort_by_confidence(boxes: np.ndarray, classes: np.ndarray, features: np.ndarray | None):
    """Reorder by descending max class probability (background column included, as the original); stable."""
    order = np.argsort(-classes.max(axis=1), kind="stable") if len(classes) else np.arange(0)
    return boxes[order], classes[order], None if features is None else features[order]


def detector_regions(record: dict, where: str, num_classes: int | None = None,
                     precomputed: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(boxes [N, 4], classes [N, C], features [N, D] or None) of a box record (what `read_box_file` returns, or
    the same fields read from a shard), checked and sorted by confidence; errors name `where` (file or shard key).

    With `num_classes` (the MVRC head's width), `classes` must have that many columns; an image without detections
    keeps targets of that width, so that it trains its caption (MLM, relationship) over the whole-image box alone
    and a batch of such images has no MVRC target rather than a 0-column one.
    """
    if "classes" not in record:
        raise BoxFileError(f"{where}: field 'classes' is missing (needed as the MVRC target)")
    classes = record["classes"]
    if record["num_boxes"] == 0 and num_classes is not None:
        classes = np.zeros((0, num_classes), dtype=np.float32)
    width = classes.shape[1]
    if num_classes is not None and record["num_boxes"] > 0 and width != num_classes:
        raise BoxFileError(f"{where}: 'classes' has {width} columns (detector classes, background included) "
                           f"but NETWORK.VLBERT.visual_region_classes is {num_classes}; set the key to "
                           f"{width} (data/extract_boxes.py prints it)")
    if precomputed and "features" not in record:
        raise BoxFileError(f"{where}: field 'features' is missing (NETWORK.IMAGE_FEAT_PRECOMPUTED is true)")
    return sort_by_confidence(record["boxes"], classes, record.get("features") if precomputed else None)


def raw_caption_sample(regions: tuple, image: Image.Image | None, record: dict, words: list[str],
                       where: str) -> RawCaptionSample:
    """The raw sample of `detector_regions` output, the decoded image (None in precomputed mode, where the size
    comes from the record's `image_w`/`image_h`) and the caption words; `where` becomes its `source`."""
    size = image.size if image is not None else (record.get("image_w"), record.get("image_h"))
    if size[0] is None or size[1] is None:
        raise BoxFileError(f"{where}: fields 'image_w'/'image_h' are needed in precomputed mode")
    boxes, classes, features = regions
    return RawCaptionSample(image, (int(size[0]), int(size[1])), boxes, classes, features, [str(w) for w in words],
                            source=where)


def truncate_lengths(num_text: int, num_boxes: int, seq_len: int) -> tuple[int, int]:
    """Joint truncation of the original: while text + boxes > seq_len drop one element from the longer list
    (text on ties); keep at least 2 text tokens ([CLS] + [SEP]) and 1 box (the whole image)."""
    text, boxes = num_text, num_boxes
    while text + boxes > seq_len and text > 0 and boxes > 0:
        if boxes > text:
            boxes -= 1
        else:
            text -= 1
    return max(text, min(2, num_text)), max(boxes, min(1, num_boxes))


class CaptionItemBuilder(Protocol):
    """Turns a raw sample into an item dict (pretraining's `CaptionSampleBuilder`)."""

    def build(self, raw: RawCaptionSample, index: int, rng: np.random.Generator,
              other_caption: Callable[[np.random.Generator], list[str]]) -> dict: ...


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

    def __init__(self, data_path: str, image_set: str, builder: CaptionItemBuilder | None, precomputed: bool = False,
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

    def describe(self, index: int) -> str:
        """The item in words, for messages: its record in the annotation file, the box file (and image) it reads."""
        record = self.records[index]
        files = f"box file {self.resolve(record['frcnn'])}"
        if not self.precomputed:
            files = f"image {self.resolve(record['image'])}, " + files
        return f"{self.ann_file} record {index + 1} ({files})"

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
        known = None if size[0] is None or size[1] is None else size
        return open_image_or_blank(path, known, self.skip_unreadable_images)

    def other_caption(self, index: int, rng: np.random.Generator) -> list[str]:
        """The caption of a uniformly drawn other sample (the relationship task's negative)."""
        other = int(rng.integers(max(len(self.records) - 1, 1)))
        other += int(other >= index and len(self.records) > 1)
        return self.records.caption(other)

    def __getitem__(self, index: int) -> dict:
        rng = self.item_rng(index)
        if self.builder is None:
            raise TypeError("ConceptualCaptionsDataset built without an item builder reads raw samples only (read_raw)")
        return self.builder.build(self.read_raw(index), index, rng, lambda r: self.other_caption(index, r))
