"""Pretraining corruption: whole-word masked language modelling and masked region classification (MVRC).

Every function takes an explicit `numpy.random.Generator`, so a dataset can seed one per item from
(seed, epoch, index) and get the same masks for the same seed whatever the worker layout.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

IGNORE_LABEL = -1
MASK_PROB = 0.15
# of the selected words: 80 % [MASK], 10 % a random word piece, 10 % unchanged (BERT's recipe)
MASK_TOKEN_SHARE = 0.8
RANDOM_TOKEN_SHARE = 0.1
# of the selected regions: 90 % masked (op 1), 10 % left visible but still predicted (op 0)
REGION_HIDE_SHARE = 0.9

_BRACKETED = re.compile(r"^\[[^\]]*\]$")  # [PAD], [unused12], [CLS], [SEP], [MASK], [UNK], ...


class SharedEpoch:
    """An epoch number in shared memory: set in the main process, read by DataLoader workers (persistent ones
    included, which keep their own copy of the dataset object and would never see a plain attribute change)."""

    def __init__(self, epoch: int = 0):
        self._value = torch.full((1,), int(epoch), dtype=torch.long).share_memory_()

    def set(self, epoch: int) -> None:
        self._value.fill_(int(epoch))

    def get(self) -> int:
        return int(self._value.item())


def item_rng(seed: int, epoch: int, index: int, stream: int = 0) -> np.random.Generator:
    """A generator that depends only on (seed, epoch, index, stream): reproducible across worker layouts."""
    return np.random.default_rng([max(int(seed), 0), int(epoch), int(index), int(stream)])


class EpochSeeded:
    """Dataset mixin: `item_rng(index)` draws from (seed, epoch, index); `set_epoch` reaches the workers."""

    def init_epoch_seed(self, seed: int, stream: int = 0) -> None:
        self.seed, self.rng_stream, self._epoch = int(seed), int(stream), SharedEpoch()

    def set_epoch(self, epoch: int) -> None:
        self._epoch.set(epoch)

    @property
    def epoch(self) -> int:
        return self._epoch.get()

    def item_rng(self, index: int) -> np.random.Generator:
        return item_rng(self.seed, self._epoch.get(), index, self.rng_stream)


def replacement_token_ids(vocab: Sequence[str]) -> np.ndarray:
    """Ids of real word pieces usable as random replacements: every token that is not bracketed
    ([PAD], [unusedN], [CLS], [SEP], [MASK], [UNK], ...). Computed once per dataset."""
    ids = np.array([i for i, token in enumerate(vocab) if token and not _BRACKETED.match(token)], dtype=np.int64)
    if ids.size == 0:
        raise ValueError("the vocabulary holds no ordinary word piece to draw MLM replacements from")
    return ids


@dataclass(frozen=True)
class WholeWordMasker:
    """Whole-word MLM over word pieces: each word is selected with probability `prob`; all its pieces share the
    decision and the 80/10/10 branch (the random branch draws one replacement per piece)."""

    mask_id: int
    replacement_ids: np.ndarray  # from `replacement_token_ids`
    prob: float = MASK_PROB

    def __call__(self, piece_ids: Sequence[int], word_index: Sequence[int],
                 rng: np.random.Generator) -> tuple[list[int], list[int]]:
        """piece_ids [P] with word_index [P] (the word each piece belongs to; negative = never masked, e.g.
        [CLS]/[SEP]) -> (corrupted ids [P], labels [P]: the original id where selected, -1 elsewhere)."""
        ids = list(int(i) for i in piece_ids)
        labels = [IGNORE_LABEL] * len(ids)
        words = sorted({int(w) for w in word_index if int(w) >= 0})
        if not words:
            return ids, labels
        selected = {w for w, u in zip(words, rng.random(len(words)), strict=True) if u < self.prob}
        branch = {w: rng.random() for w in sorted(selected)}
        for position, word in enumerate(word_index):
            word = int(word)
            if word not in selected:
                continue
            labels[position] = ids[position]
            u = branch[word]
            if u < MASK_TOKEN_SHARE:
                ids[position] = self.mask_id
            elif u < MASK_TOKEN_SHARE + RANDOM_TOKEN_SHARE:
                ids[position] = int(self.replacement_ids[rng.integers(self.replacement_ids.size)])
        return ids, labels


def select_regions(num_boxes: int, rng: np.random.Generator, prob: float = MASK_PROB,
                   protect_first: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """MVRC selection over `num_boxes` regions.

    Returns (ops [N] int64: 1 = hidden, 0 = visible, selected [N] bool: predicted). Box 0 (the whole image) is
    never selected when `protect_first`; of the selected regions 90 % are hidden (op 1), 10 % stay visible.
    """
    draws = rng.random(num_boxes)
    selected = draws < prob
    if protect_first and num_boxes:
        selected[0] = False
    hide = rng.random(num_boxes) < REGION_HIDE_SHARE
    ops = (selected & hide).astype(np.int64)
    return ops, selected


def region_labels(classes: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """The detector class distribution [N, C] on selected rows, zero rows elsewhere."""
    labels = np.zeros_like(classes, dtype=np.float32)
    labels[selected] = classes[selected]
    return labels


def zero_pixels_in_boxes(image: Tensor, boxes: Tensor, ops: Tensor | np.ndarray) -> Tensor:
    """Zero the normalised image [3, H, W] inside every box [N, 4] (x1, y1, x2, y2, inclusive pixels) with
    op == 1; returns a new tensor, pixels outside the masked boxes untouched."""
    out = image.clone()
    height, width = out.shape[-2:]
    for box, op in zip(boxes.tolist(), np.asarray(ops).tolist(), strict=True):
        if op != 1:
            continue
        x1, y1 = max(int(box[0]), 0), max(int(box[1]), 0)
        x2, y2 = min(int(box[2]) + 1, width), min(int(box[3]) + 1, height)
        out[:, y1:y2, x1:x2] = 0
    return out


def mean_unmasked_feature(features: np.ndarray, ops: np.ndarray) -> np.ndarray:
    """Whole-image feature for precomputed mode: mean over the visible boxes (all boxes when every one is hidden)."""
    visible = features[np.asarray(ops) != 1]
    source = visible if len(visible) else features
    return source.mean(0) if len(source) else np.zeros(features.shape[1], dtype=np.float32)


def as_long(values: Sequence[int]) -> Tensor:
    return torch.as_tensor(list(values), dtype=torch.long)
