"""Image-caption pairs for matching: each image with its own caption (label 1) or another image's (label 0),
read from Conceptual-Captions `{split}_frcnn.json` files with their precomputed box features."""
from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset

from common.data.box_files import BoxFileError
from common.data.boxes import check_boxes
from common.data.captions import ConceptualCaptionsDataset, truncate_lengths
from common.data.masking import EpochSeeded, item_rng
from common.data.tokenizer import BertTokenizer, check_seq_len
from common.data.transforms import VisualTransform, swap_left_right

# collate rules: pad value per key (None = stack)
ITM_PAD_RULES = {"boxes": -2.0, "box_features": 0.0, "im_info": None, "text": 0, "label": None, "index": None}
MAX_NEGATIVE_DRAWS = 32


class ITMDataset(EpochSeeded, Dataset):
    """Items: boxes [N, 4] (whole image first), box_features [N, D], im_info [4], text [T] (`[CLS] caption
    [SEP]` ids), label (float 0/1), index.

    train: one item per image; label and negative drawn from (seed, epoch, index).
    val/test: two items per image (2k: own caption, 2k + 1: a negative fixed by (seed, index)), exactly balanced.
    """

    PAD_RULES = ITM_PAD_RULES

    def __init__(self, data_path: str, image_set: str, tokenizer: BertTokenizer, transform: VisualTransform,
                 train: bool, seq_len: int = 64, negative_prob: float = 0.5, zip_mode: bool = False, seed: int = 0,
                 max_positions: int = 512):
        check_seq_len(seq_len, max_positions)
        # the Conceptual Captions reading shared with pretraining; items are built here, not by a builder
        self.source = ConceptualCaptionsDataset(data_path, image_set, builder=None, precomputed=True,
                                                zip_mode=zip_mode)
        self.tokenizer, self.transform = tokenizer, transform
        self.train, self.seq_len, self.negative_prob = train, int(seq_len), float(negative_prob)
        self.captions = [[str(w) for w in r["caption"]] for r in self.source.records]
        if len({tuple(c) for c in self.captions}) < 2:
            raise ValueError(f"{self.source.ann_file}: image-text matching needs at least two different captions")
        self.init_epoch_seed(seed)

    def __len__(self) -> int:
        return len(self.captions) if self.train else 2 * len(self.captions)

    def pair(self, index: int) -> tuple[int, int, int, np.random.Generator]:
        """(image index, caption index, label, the item's generator) of item `index`."""
        if self.train:
            image, rng = index, self.item_rng(index)
            positive = rng.random() >= self.negative_prob
        else:
            image, rng = index // 2, item_rng(self.seed, 0, index)
            positive = index % 2 == 0
        caption = image if positive else self.negative_caption(image, rng)
        return image, caption, int(positive), rng

    def describe(self, index: int) -> str:
        """The item in words, for messages: the image's record and box file, and whose caption it is paired with."""
        image, caption, label, _ = self.pair(index)
        return f"pair {index}: {self.source.describe(image)} with the caption of record {caption + 1} (label {label})"

    def negative_caption(self, image: int, rng: np.random.Generator) -> int:
        """Index of a uniformly drawn other image whose caption differs from the image's own."""
        count = len(self.captions)
        for _ in range(MAX_NEGATIVE_DRAWS):
            other = int(rng.integers(count - 1))
            other += int(other >= image)
            if self.captions[other] != self.captions[image]:
                return other
        return next(i for i in range(count) if self.captions[i] != self.captions[image])

    def text_ids(self, words: list[str]) -> list[int]:
        pieces = self.tokenizer.tokenize(" ".join(words))
        return [self.tokenizer.cls_id] + self.tokenizer.convert_tokens_to_ids(pieces) + [self.tokenizer.sep_id]

    def __getitem__(self, index: int) -> dict:
        image, caption, label, rng = self.pair(index)
        raw = self.source.read_raw(image)
        width, height = raw.image_size
        if len(raw.boxes) == 0:
            # the whole-image feature is the mean of the box features: with none, the pair has nothing to match
            raise BoxFileError(f"{raw.source}: no boxes, so image-text matching has no visual feature for it")
        whole = np.array([[0.0, 0.0, width - 1.0, height - 1.0]], dtype=np.float32)
        detected = check_boxes(raw.boxes.astype(np.float32).reshape(-1, 4), width, height, raw.source)
        boxes = np.concatenate([whole, detected], 0)
        out = self.transform(None, boxes, image_size=raw.image_size, rng=random.Random(int(rng.integers(2**63))))
        words = swap_left_right(self.captions[caption]) if out["flipped"] else self.captions[caption]
        ids = self.text_ids(words)
        num_text, num_boxes = truncate_lengths(len(ids), len(boxes), self.seq_len)
        if num_text < len(ids):
            ids = ids[: num_text - 1] + [ids[-1]]
        detector = raw.features[: num_boxes - 1].astype(np.float32)
        features = np.concatenate([detector.mean(0, keepdims=True) if len(detector) else
                                   np.zeros((1, raw.features.shape[1]), np.float32), detector], 0)
        return {"boxes": out["boxes"][:num_boxes], "box_features": torch.from_numpy(features),
                "im_info": out["im_info"], "text": torch.as_tensor(ids, dtype=torch.long),
                "label": torch.tensor(float(label)), "index": index}
