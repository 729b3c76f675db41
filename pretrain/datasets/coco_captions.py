"""COCO captions 2017 with ground-truth instance boxes, the input of the attention-map tool: the first caption of
each image that has instances; boxes x2 = x + w - 1; MVRC target one-hot over background + 80 categories."""
from __future__ import annotations

import contextlib
import io
import os

import numpy as np
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from common.data.captions import CAPTION_PAD_RULES, RawCaptionSample, sort_by_confidence
from common.data.image_io import open_image
from common.data.masking import EpochSeeded
from pretrain.datasets.caption_sample import CaptionSampleBuilder

NUM_COCO_CLASSES = 81  # background + 80 categories (contiguous ids 1..80 in sorted COCO id order)


def load_coco(path: str) -> COCO:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        return COCO(path)


def coco_xywh_to_xyxy(bbox, width: int, height: int) -> list[float]:
    """[x, y, w, h] -> [x1, y1, x1 + w - 1, y1 + h - 1], clamped to the image (the original's -1 convention)."""
    x, y, w, h = (float(v) for v in bbox)
    return [min(max(x, 0.0), width - 1.0), min(max(y, 0.0), height - 1.0),
            min(max(x + w - 1.0, 0.0), width - 1.0), min(max(y + h - 1.0, 0.0), height - 1.0)]


class COCOCaptionsDataset(EpochSeeded, Dataset):
    """Items as `CaptionSampleBuilder.build`, plus `image_id`. End-to-end only (no precomputed features)."""

    PAD_RULES = CAPTION_PAD_RULES

    def __init__(self, data_path: str, image_set: str, builder: CaptionSampleBuilder, seed: int = 0):
        image_set = image_set if image_set.endswith("2017") else f"{image_set}2017"
        self.image_root = os.path.join(data_path, image_set)
        self.builder = builder
        self.init_epoch_seed(seed)
        annotations = os.path.join(data_path, "annotations")
        self.captions = load_coco(os.path.join(annotations, f"captions_{image_set}.json"))
        self.instances = load_coco(os.path.join(annotations, f"instances_{image_set}.json"))
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

    def read_raw(self, index: int) -> RawCaptionSample:
        image_id = self.ids[index]
        info = self.instances.loadImgs(image_id)[0]
        image = open_image(os.path.join(self.image_root, info["file_name"]))
        width, height = image.size
        anns = self.instances.loadAnns(self.instances.getAnnIds(imgIds=image_id, iscrowd=None))
        boxes = np.array([coco_xywh_to_xyxy(a["bbox"], width, height) for a in anns], dtype=np.float32)
        classes = np.zeros((len(anns), NUM_COCO_CLASSES), dtype=np.float32)
        classes[np.arange(len(anns)), [self.contiguous[a["category_id"]] for a in anns]] = 1.0
        boxes, classes, _ = sort_by_confidence(boxes, classes, None)
        caption = self.captions.loadAnns(self.captions.getAnnIds(imgIds=image_id))[0]["caption"]
        return RawCaptionSample(image, (width, height), boxes, classes, None, caption.strip().split(" "))

    def __getitem__(self, index: int) -> dict:
        rng = self.item_rng(index)
        item = self.builder.build(self.read_raw(index), index, rng)
        item["image_id"] = int(self.ids[index])
        return item
