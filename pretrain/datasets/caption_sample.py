"""One image-caption pretraining sample, shared by Conceptual Captions and COCO captions: boxes sorted and
prefixed by the whole image, resize/flip, relationship negative, joint truncation, MLM and MVRC masking."""
from __future__ import annotations

import logging
import random
from collections.abc import Callable

import numpy as np
import torch

from common.data.boxes import check_boxes, warn_once
from common.data.captions import RawCaptionSample, truncate_lengths
from common.data.masking import (
    IGNORE_LABEL,
    WholeWordMasker,
    mean_unmasked_feature,
    region_labels,
    replacement_token_ids,
    select_regions,
    zero_pixels_in_boxes,
)
from common.data.tokenizer import BertTokenizer, check_seq_len
from common.data.transforms import VisualTransform, swap_left_right

log = logging.getLogger(__name__)


class CaptionSampleBuilder:
    """Turns a RawCaptionSample into the item dict (see CAPTION_PAD_RULES for the keys)."""

    def __init__(self, tokenizer: BertTokenizer, transform: VisualTransform, seq_len: int = 64,
                 with_rel_task: bool = False, with_mlm_task: bool = True, with_mvrc_task: bool = True,
                 mask_raw_pixels: bool = True, add_image_as_a_box: bool = True, max_positions: int | None = None):
        self.tokenizer = tokenizer
        self.transform = transform
        self.seq_len = int(seq_len)
        if max_positions is not None:
            check_seq_len(self.seq_len, max_positions)
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
        source = raw.source or f"caption sample {index}"
        detected = check_boxes(raw.boxes.astype(np.float32).reshape(-1, 4), width, height, source)
        if len(detected) == 0:
            warn_once(source, "no boxes", f"{source}: no boxes; the caption trains over the whole-image box alone"
                      + (" (a zero feature in precomputed mode)" if raw.features is not None else ""))
        whole = np.array([[0.0, 0.0, width - 1.0, height - 1.0]], dtype=np.float32)
        boxes = np.concatenate([whole, detected], 0)
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
