"""COCO captions 2017 with ground-truth instance boxes, the input of the attention-map tool: the first caption of
each image that has instances; boxes x2 = x + w - 1; MVRC target one-hot over background + 80 categories.

Boxes follow the shared rules (`common.data.boxes.check_boxes`, applied by the sample builder with the instances
file and image id as the source): no silent clamping. Images follow DATASET.SKIP_UNREADABLE_IMAGES, with the size
from the instances file.
"""
from __future__ import annotations

import contextlib
import io
import os

import numpy as np
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from common.data.captions import CAPTION_PAD_RULES, RawCaptionSample, sort_by_confidence
from common.data.image_io import open_image_or_blank
from common.data.masking import EpochSeeded
from pretrain.datasets.caption_sample import CaptionSampleBuilder

NUM_COCO_CLASSES = 81  # background + 80 categories (contiguous ids 1..80 in sorted COCO id order)


def load_coco(path: str) -> COCO:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        return COCO(path)


def coco_xywh_to_xyxy(bbox) -> list[float]:
    """[x, y, w, h] -> [x1, y1, x1 + w - 1, y1 + h - 1] (the original's -1 convention), unclamped.

    A sub-pixel side (0 <= w < 1) gives a one-pixel box (x2 = x1) rather than an inverted one; a negative side stays
    inverted, for `check_boxes` to refuse. Boxes outside the image are left to `check_boxes` too.
    """
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + max(w - 1.0, min(w, 0.0)), y + max(h - 1.0, min(h, 0.0))]


class COCOCaptionsDataset(EpochSeeded, Dataset):
    """Items as `CaptionSampleBuilder.build`, plus `image_id`. End-to-end only (no precomputed features)."""

    PAD_RULES = CAPTION_PAD_RULES

    def __init__(self, data_path: str, image_set: str, builder: CaptionSampleBuilder, seed: int = 0,
                 skip_unreadable_images: bool = False):
        image_set = image_set if image_set.endswith("2017") else f"{image_set}2017"
        self.image_root = os.path.join(data_path, image_set)
        self.builder, self.skip_unreadable_images = builder, skip_unreadable_images
        self.init_epoch_seed(seed)
        annotations = os.path.join(data_path, "annotations")
        self.captions = load_coco(os.path.join(annotations, f"captions_{image_set}.json"))
        self.instances_file = os.path.join(annotations, f"instances_{image_set}.json")
        self.instances = load_coco(self.instances_file)
        category_ids = sorted(self.instances.getCatIds())
        if len(category_ids) + 1 != NUM_COCO_CLASSES:
            raise ValueError(f"instances_{image_set}.json: expected 80 categories, found {len(category_ids)}")
        self.contiguous = {cat: k + 1 for k, cat in enumerate(category_ids)}
        self.ids = [i for i in sorted(self.instances.getImgIds())
                    if self.instances.getAnnIds(imgIds=i, iscrowd=None) and self.captions.getAnnIds(imgIds=i)]
        if not self.ids:
            raise ValueError(f"{annotations}: no {image_set} image has both instances and a caption")

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> str:
        return os.path.join(self.image_root, self.instances.loadImgs(self.ids[index])[0]["file_name"])

    def describe(self, index: int) -> str:
        """The item in words, for messages: COCO image id and file."""
        return f"COCO image {self.ids[index]} ({self.image_path(index)})"

    def read_raw(self, index: int) -> RawCaptionSample:
        image_id = self.ids[index]
        info = self.instances.loadImgs(image_id)[0]
        known = (int(info["width"]), int(info["height"])) if "width" in info and "height" in info else None
        image = open_image_or_blank(self.image_path(index), known, self.skip_unreadable_images)
        width, height = image.size
        anns = self.instances.loadAnns(self.instances.getAnnIds(imgIds=image_id, iscrowd=None))
        boxes = np.array([coco_xywh_to_xyxy(a["bbox"]) for a in anns], dtype=np.float32).reshape(-1, 4)
        classes = np.zeros((len(anns), NUM_COCO_CLASSES), dtype=np.float32)
        classes[np.arange(len(anns)), [self.contiguous[a["category_id"]] for a in anns]] = 1.0
        boxes, classes, _ = sort_by_confidence(boxes, classes, None)
        caption = self.captions.loadAnns(self.captions.getAnnIds(imgIds=image_id))[0]["caption"]
        return RawCaptionSample(image, (width, height), boxes, classes, None, caption.strip().split(" "),
                                source=f"{self.instances_file} (image {image_id})")

    def __getitem__(self, index: int) -> dict:
        rng = self.item_rng(index)
        item = self.builder.build(self.read_raw(index), index, rng)
        item["image_id"] = int(self.ids[index])
        return item
