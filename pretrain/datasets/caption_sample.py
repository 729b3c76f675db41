"""One image-caption pretraining sample, shared by Conceptual Captions and COCO captions: boxes sorted and
prefixed by the whole image, resize/flip, relationship negative, joint truncation, MLM and MVRC masking."""
from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from common.data.box_files import BoxFileError
from common.data.masking import (
    IGNORE_LABEL,
    WholeWordMasker,
    mean_unmasked_feature,
    region_labels,
    replacement_token_ids,
    select_regions,
    zero_pixels_in_boxes,
)
from common.data.tokenizer import BertTokenizer
from common.data.transforms import VisualTransform, swap_left_right

log = logging.getLogger(__name__)

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


def sort_by_confidence(boxes: np.ndarray, classes: np.ndarray, features: np.ndarray | None):
    """Reorder by descending max class probability (background column included, as the original); stable."""
    order = np.argsort(-classes.max(axis=1), kind="stable") if len(classes) else np.arange(0)
    return boxes[order], classes[order], None if features is None else features[order]


def detector_regions(record: dict, where: str, num_classes: int | None = None,
                     precomputed: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(boxes [N, 4], classes [N, C], features [N, D] or None) of a box record (what `read_box_file` returns, or
    the same fields read from a shard), checked and sorted by confidence; errors name `where` (file or shard key).

    With `num_classes` (the MVRC head's width), `classes` must have that many columns; an image without detections
    keeps targets of that width, so that it trains its caption over the whole-image box alone.
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
    comes from the record's `image_w`/`image_h`) and the caption words."""
    size = image.size if image is not None else (record.get("image_w"), record.get("image_h"))
    if size[0] is None or size[1] is None:
        raise BoxFileError(f"{where}: fields 'image_w'/'image_h' are needed in precomputed mode")
    boxes, classes, features = regions
    return RawCaptionSample(image, (int(size[0]), int(size[1])), boxes, classes, features, [str(w) for w in words])


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


class CaptionSampleBuilder:
    """Turns a RawCaptionSample into the item dict (see CAPTION_PAD_RULES for the keys)."""

    def __init__(self, tokenizer: BertTokenizer, transform: VisualTransform, seq_len: int = 64,
                 with_rel_task: bool = False, with_mlm_task: bool = True, with_mvrc_task: bool = True,
                 mask_raw_pixels: bool = True, add_image_as_a_box: bool = True):
        self.tokenizer = tokenizer
        self.transform = transform
        self.seq_len = int(seq_len)
        self.with_rel_task, self.with_mlm_task, self.with_mvrc_task = with_rel_task, with_mlm_task, with_mvrc_task
        self.mask_raw_pixels = mask_raw_pixels
        if not add_image_as_a_box:
            raise ValueError("DATASET.ADD_IMAGE_AS_A_BOX must be true for pretraining: text tokens read their visual "
                             "feature from the whole-image box 0")
        vocab = tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size))
        self.masker = WholeWordMasker(tokenizer.mask_id, replacement_token_ids(vocab))

    def text_ids(self, words: list[str]) -> tuple[list[int], list[int]]:
        """[CLS] caption [SEP] ids and the word index of each piece (-1 for [CLS]/[SEP])."""
        basic = self.tokenizer.basic_tokenize(" ".join(words))
        pieces, word_index = self.tokenizer.tokenize_words(basic)
        ids = [self.tokenizer.cls_id] + self.tokenizer.convert_tokens_to_ids(pieces) + [self.tokenizer.sep_id]
        return ids, [-1] + word_index + [-1]

    def build(self, raw: RawCaptionSample, index: int, rng: np.random.Generator,
              random_caption: Callable[[np.random.Generator], list[str]] | None = None) -> dict:
        width, height = raw.image_size
        whole = np.array([[0.0, 0.0, width - 1.0, height - 1.0]], dtype=np.float32)
        boxes = np.concatenate([whole, raw.boxes.astype(np.float32).reshape(-1, 4)], 0)
        classes = np.concatenate([np.zeros((1, raw.classes.shape[1]), np.float32), raw.classes.astype(np.float32)])

        words, relationship = raw.words, 1
        if self.with_rel_task and random_caption is not None and rng.random() < 0.5:
            words, relationship = random_caption(rng), 0
        flip_rng = random.Random(int(rng.integers(2**63)))
        out = self.transform(raw.image, boxes, image_size=raw.image_size, rng=flip_rng)
        if out["flipped"]:
            words = swap_left_right(list(words))

        ids, word_index = self.text_ids(words)
        num_text, num_boxes = truncate_lengths(len(ids), len(boxes), self.seq_len)
        if num_text < len(ids):
            ids, word_index = ids[: num_text - 1] + [ids[-1]], word_index[: num_text - 1] + [-1]
        boxes_t, classes = out["boxes"][:num_boxes], classes[:num_boxes]

        if self.with_mlm_task:
            ids, mlm_labels = self.masker(ids, word_index, rng)
        else:
            mlm_labels = [IGNORE_LABEL] * len(ids)
        if self.with_mvrc_task:
            ops, selected = select_regions(num_boxes, rng)
        else:
            ops, selected = np.zeros(num_boxes, np.int64), np.zeros(num_boxes, bool)

        item = {"boxes": boxes_t, "im_info": out["im_info"], "text": torch.as_tensor(ids, dtype=torch.long),
                "relationship_label": torch.tensor(relationship, dtype=torch.long),
                "mlm_labels": torch.as_tensor(mlm_labels, dtype=torch.long),
                "mvrc_ops": torch.from_numpy(ops), "mvrc_labels": torch.from_numpy(region_labels(classes, selected)),
                "index": index}
        if raw.features is not None:
            detector = raw.features[: num_boxes - 1].astype(np.float32)
            image_feature = mean_unmasked_feature(detector, ops[1:])
            item["box_features"] = torch.from_numpy(np.concatenate([image_feature[None], detector], 0))
        if out["image"] is not None:
            image = out["image"]
            if self.mask_raw_pixels and self.with_mvrc_task:
                image = zero_pixels_in_boxes(image, boxes_t, ops)
            item["image"] = image
        return item
