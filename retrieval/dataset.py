"""Retrieval items from a Karpathy split with precomputed bottom-up box features: captions with their image for
training and validation (`RetrievalPairs`), and the three views the two-stage evaluation scores (every image alone,
every caption alone, chosen (caption, image) pairs)."""
from __future__ import annotations

import functools
import os
import random
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from common.data.box_files import BoxFileError, read_box_file, whole_image_feature
from common.data.boxes import check_boxes
from common.data.masking import EpochSeeded
from common.data.tokenizer import BertTokenizer
from common.data.transforms import VisualTransform, swap_left_right
from retrieval.karpathy import KarpathyImage, read_karpathy

# collate rules: pad value per key (None = stack)
PAD_RULES = {"boxes": -2.0, "box_features": 0.0, "im_info": None, "text": 0, "image_index": None, "index": None}


class KarpathySplit:
    """One image set of a Karpathy file: images (box files under `box_folder`) and their captions, flattened in
    file order (`texts[t]` describes image `text_image[t]`)."""

    def __init__(self, data_path: str, annotation_file: str, image_set: str, box_folder: str, image_folder: str,
                 tokenizer: BertTokenizer, max_text_len: int = 40):
        self.data_path, self.box_folder, self.image_folder = data_path, box_folder, image_folder
        self.annotation_path = os.path.join(data_path, annotation_file)
        self.images: list[KarpathyImage] = read_karpathy(self.annotation_path, image_set)
        self.texts = [caption for image in self.images for caption in image.captions]
        self.text_image = [i for i, image in enumerate(self.images) for _ in image.captions]
        self.sentids = [s for image in self.images for s in image.sentids]
        self.tokenizer, self.max_text_len = tokenizer, int(max_text_len)
        if self.max_text_len < 3:
            raise ValueError(f"DATASET.SEQ_LEN must leave room for [CLS], a word and [SEP], found {max_text_len}")

    def box_path(self, image: int) -> str:
        return os.path.join(self.data_path, self.box_folder, self.images[image].box_stem + ".json")

    def image_path(self, image: int) -> str:
        return os.path.join(self.data_path, self.image_folder, self.images[image].relative_path)

    def text_ids(self, text: int, flipped: bool = False) -> torch.Tensor:
        """`[CLS] caption [SEP]` ids [T] (T <= max_text_len; the caption is cut at the end), "left"/"right" swapped
        when the image is flipped."""
        words = self.texts[text]
        pieces = self.tokenizer.tokenize(swap_left_right(words) if flipped else words)[: self.max_text_len - 2]
        ids = [self.tokenizer.cls_id, *self.tokenizer.convert_tokens_to_ids(pieces), self.tokenizer.sep_id]
        return torch.as_tensor(ids, dtype=torch.long)

    @functools.lru_cache(maxsize=64)  # noqa: B019 - the split lives as long as its datasets; pairs of one image
    def image_record(self, image: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:  # come one after another
        """(boxes [N, 4] with the whole image first, features [N, D], (width, height)) from the box file."""
        path = self.box_path(image)
        record = read_box_file(path, fields=("boxes", "features", "image_box_feature"), feature_dim=None)
        if "features" not in record:
            raise BoxFileError(f"{path}: no 'features': retrieval reads precomputed region features")
        if "image_w" not in record or "image_h" not in record:
            raise BoxFileError(f"{path}: no 'image_w'/'image_h': the whole-image box needs the image size")
        width, height = record["image_w"], record["image_h"]
        detected = check_boxes(record["boxes"].astype(np.float32).reshape(-1, 4), width, height, path)
        boxes = np.concatenate([np.array([[0.0, 0.0, width - 1.0, height - 1.0]], np.float32), detected], 0)
        features = np.concatenate([whole_image_feature(record, path)[None], record["features"]], 0)
        return boxes, features.astype(np.float32), (width, height)

    def regions(self, image: int, transform: VisualTransform, rng: random.Random | None = None) -> dict:
        """boxes [N, 4] (the whole image first, resized), box_features [N, D], im_info [4], flipped (bool)."""
        boxes, features, size = self.image_record(image)
        out = transform(None, boxes.copy(), image_size=size, rng=rng)
        return {"boxes": out["boxes"], "box_features": torch.from_numpy(features.copy()), "im_info": out["im_info"],
                "flipped": out["flipped"]}


def interleaved_captions(text_image: Sequence[int]) -> list[int]:
    """Caption indices in rounds: the first caption of every image (file order), then every second one, ...; so
    that consecutive captions, and an unshuffled batch of them, show different images."""
    rounds: Counter[int] = Counter()
    keys = []
    for text, image in enumerate(text_image):
        keys.append((rounds[image], image, text))
        rounds[image] += 1
    return [text for _, _, text in sorted(keys)]


class RetrievalPairs(EpochSeeded, Dataset):
    """One item per caption: its image's regions, `text` [T], `image_index` (the image's position in the split,
    the label in-batch contrast and hard negatives read) and `index`. Flips come from (seed, epoch, index).

    With `interleave` (the in-loop validation set, read unshuffled) the captions come in rounds
    (`interleaved_captions`): in file order a batch of 16 would hold the captions of only 3-4 images, and the in-batch
    metrics would rank among those."""

    PAD_RULES = PAD_RULES

    def __init__(self, split: KarpathySplit, transform: VisualTransform, seed: int = 0, interleave: bool = False):
        self.split, self.transform = split, transform
        self.order = interleaved_captions(split.text_image) if interleave else list(range(len(split.texts)))
        self.init_epoch_seed(seed)

    def __len__(self) -> int:
        return len(self.split.texts)

    def __getitem__(self, index: int) -> dict:
        text = self.order[index]
        image = self.split.text_image[text]
        rng = random.Random(int(self.item_rng(index).integers(2**63)))
        regions = self.split.regions(image, self.transform, rng)
        return {"boxes": regions["boxes"], "box_features": regions["box_features"], "im_info": regions["im_info"],
                "text": self.split.text_ids(text, regions.pop("flipped")), "image_index": image, "index": index}


class ImageItems(Dataset):
    """Every image of the split alone (the image side of the first stage): boxes, box_features, im_info, index."""

    PAD_RULES = PAD_RULES

    def __init__(self, split: KarpathySplit, transform: VisualTransform):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split.images)

    def __getitem__(self, index: int) -> dict:
        regions = self.split.regions(index, self.transform)
        regions.pop("flipped")
        return {**regions, "index": index}


class TextItems(Dataset):
    """Every caption of the split alone (the text side of the first stage): text [T], index."""

    PAD_RULES = PAD_RULES

    def __init__(self, split: KarpathySplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split.texts)

    def __getitem__(self, index: int) -> dict:
        return {"text": self.split.text_ids(index), "index": index}


class PairItems(Dataset):
    """Chosen (caption, image) pairs, item n = pairs[n] (the second stage): the image's regions, text, index."""

    PAD_RULES = PAD_RULES

    def __init__(self, split: KarpathySplit, transform: VisualTransform, pairs: Sequence[tuple[int, int]]):
        self.split, self.transform, self.pairs = split, transform, list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        text, image = self.pairs[index]
        regions = self.split.regions(image, self.transform)
        regions.pop("flipped")
        return {**regions, "text": self.split.text_ids(text), "index": index}
