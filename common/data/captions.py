"""Image-caption data shared by pretraining and image-text matching: the Conceptual Captions files
(`{split}_frcnn.json` JSON lines of image path, caption words and bottom-up box-file path, read from folders or from
stored zips such as `train_image.zip@/00000042.jpg`), the raw sample they give, and the joint text/box truncation."""
from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from common.data.box_files import BoxFileError, read_box_file
from common.data.image_io import open_image_or_blank
from common.data.masking import IGNORE_LABEL, EpochSeeded

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


def read_jsonl(path: str, required: tuple[str, ...]) -> list[dict]:
    """One JSON object per line; every object must hold the `required` keys. Errors name file and line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file not found: {path}")
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not a JSON object ({err})") from err
            missing = [k for k in required if k not in record]
            if missing:
                raise ValueError(f"{path}:{number}: missing keys {missing}")
            records.append(record)
    if not records:
        raise ValueError(f"{path}: no samples")
    return records


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
        self.records = read_jsonl(self.ann_file, ("image", "caption", "frcnn"))
        for number, record in enumerate(self.records, 1):
            if not isinstance(record["caption"], list):
                raise ValueError(f"{self.ann_file}:{number}: 'caption' must be a list of words")

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
        if "classes" not in boxes_file:
            raise BoxFileError(f"{box_path}: field 'classes' is missing (needed as the MVRC target)")
        if boxes_file["num_boxes"] == 0 and self.num_classes is not None:
            # no detections: the caption still trains (MLM, relationship) over the whole-image box alone, and the
            # MVRC targets keep the head's width so that a batch of such images has no target rather than a
            # 0-column one
            boxes_file["classes"] = np.zeros((0, self.num_classes), dtype=np.float32)
        width = boxes_file["classes"].shape[1]
        if self.num_classes is not None and boxes_file["num_boxes"] > 0 and width != self.num_classes:
            raise BoxFileError(f"{box_path}: 'classes' has {width} columns (detector classes, background included) "
                               f"but NETWORK.VLBERT.visual_region_classes is {self.num_classes}; set the key to "
                               f"{width} (data/extract_boxes.py prints it)")
        if self.precomputed and "features" not in boxes_file:
            raise BoxFileError(f"{box_path}: field 'features' is missing (NETWORK.IMAGE_FEAT_PRECOMPUTED is true)")
        boxes, classes, features = sort_by_confidence(boxes_file["boxes"], boxes_file["classes"],
                                                      boxes_file.get("features"))
        image, size = None, (boxes_file.get("image_w"), boxes_file.get("image_h"))
        if not self.precomputed:
            image = self._open_image(self.resolve(record["image"]), size)
            size = image.size
        if size[0] is None or size[1] is None:
            raise BoxFileError(f"{box_path}: fields 'image_w'/'image_h' are needed in precomputed mode")
        return RawCaptionSample(image, (int(size[0]), int(size[1])), boxes, classes, features,
                                [str(w) for w in record["caption"]], source=box_path)

    def _open_image(self, path: str, size):
        known = None if size[0] is None or size[1] is None else size
        return open_image_or_blank(path, known, self.skip_unreadable_images)

    def other_caption(self, index: int, rng: np.random.Generator) -> list[str]:
        """The caption of a uniformly drawn other sample (the relationship task's negative)."""
        other = int(rng.integers(max(len(self.records) - 1, 1)))
        other += int(other >= index and len(self.records) > 1)
        return [str(w) for w in self.records[other]["caption"]]

    def __getitem__(self, index: int) -> dict:
        rng = self.item_rng(index)
        if self.builder is None:
            raise TypeError("ConceptualCaptionsDataset built without an item builder reads raw samples only (read_raw)")
        return self.builder.build(self.read_raw(index), index, rng, lambda r: self.other_caption(index, r))
