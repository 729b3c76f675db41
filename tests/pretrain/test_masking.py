"""Masking statistics and invariants of common/data/masking.py, against BERT's recipe and hand-worked cases."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from common.data.captions import truncate_lengths
from common.data.masking import (
    IGNORE_LABEL,
    WholeWordMasker,
    item_rng,
    mean_unmasked_feature,
    replacement_token_ids,
    select_regions,
    zero_pixels_in_boxes,
)
from common.data.tokenizer import read_vocab

MASK_ID = 3


def _masker(replacement_ids=None) -> WholeWordMasker:
    ids = np.arange(100, 5100) if replacement_ids is None else replacement_ids
    return WholeWordMasker(mask_id=MASK_ID, replacement_ids=np.asarray(ids))


def test_whole_word_statistics_match_bert_recipe():
    """Over ~60k words: 15 % selected, then 80 % [MASK] / 10 % random / 10 % unchanged (3-sigma bounds)."""
    masker = _masker()
    words = selected = masked = kept = replaced = 0
    rng = np.random.default_rng(0)
    for _ in range(3000):
        n_words = 20
        word_index = [-1] + [w for w in range(n_words) for _ in range(2)] + [-1]  # 2 pieces a word
        piece_ids = [1] + list(range(7000, 7000 + 2 * n_words)) + [2]
        ids, labels = masker(piece_ids, word_index, rng)
        words += n_words
        for w in range(n_words):
            positions = [1 + 2 * w, 2 + 2 * w]
            if labels[positions[0]] == IGNORE_LABEL:
                continue
            selected += 1
            first = ids[positions[0]]
            masked += first == MASK_ID
            kept += first == piece_ids[positions[0]]
            replaced += first not in (MASK_ID, piece_ids[positions[0]])
    rate = selected / words
    assert abs(rate - 0.15) < 3 * np.sqrt(0.15 * 0.85 / words)
    for share, target in ((masked, 0.8), (replaced, 0.1), (kept, 0.1)):
        assert abs(share / selected - target) < 3 * np.sqrt(target * (1 - target) / selected) + 1e-3


def test_pieces_of_a_word_share_the_decision_and_specials_never_labelled():
    masker = _masker()
    rng = np.random.default_rng(1)
    word_index = [-1, 0, 0, 0, 1, 2, 2, -1, -1]  # [CLS] w0 w0 w0 w1 w2 w2 [SEP] (a padding-like tail)
    piece_ids = [1, 10, 11, 12, 13, 14, 15, 2, 0]
    for _ in range(2000):
        ids, labels = masker(piece_ids, word_index, rng)
        assert labels[0] == labels[7] == labels[8] == IGNORE_LABEL
        assert ids[0] == 1 and ids[7] == 2 and ids[8] == 0
        for group in ([1, 2, 3], [5, 6]):
            labelled = [labels[p] != IGNORE_LABEL for p in group]
            assert all(labelled) or not any(labelled)
            if all(labelled):
                assert [labels[p] for p in group] == [piece_ids[p] for p in group]
                is_mask = [ids[p] == MASK_ID for p in group]
                assert all(is_mask) or not any(is_mask)


def test_replacements_are_real_word_pieces(minilm_dir):
    """In BERT's uncased vocab ids 0..998 are [PAD], [unusedN], [UNK], [CLS], [SEP], [MASK]; id 999 is '!'."""
    vocab = read_vocab(os.path.join(minilm_dir, "vocab.txt"))
    candidates = replacement_token_ids(vocab)
    assert candidates.min() == 999 and candidates.size == len(vocab) - 999
    masker = WholeWordMasker(mask_id=vocab.index("[MASK]"), replacement_ids=candidates)
    rng = np.random.default_rng(2)
    piece_ids = list(range(2000, 2100))
    drawn = []
    for _ in range(300):
        ids, labels = masker(piece_ids, list(range(100)), rng)
        drawn += [i for i, orig, lab in zip(ids, piece_ids, labels, strict=True)
                  if lab != IGNORE_LABEL and i not in (orig, 103)]
    assert len(drawn) > 300 and min(drawn) >= 999


def test_region_selection_never_touches_box_zero():
    rng = np.random.default_rng(3)
    selected_total = hidden_total = regions = 0
    for _ in range(4000):
        ops, selected = select_regions(11, rng)
        assert not selected[0] and ops[0] == 0
        assert np.all(ops <= selected)  # a hidden region is always a predicted one
        regions += 10
        selected_total += int(selected.sum())
        hidden_total += int(ops.sum())
    assert abs(selected_total / regions - 0.15) < 0.01
    assert abs(hidden_total / selected_total - 0.9) < 0.02


def test_zero_pixels_only_inside_hidden_boxes():
    image = torch.arange(3 * 10 * 12, dtype=torch.float32).view(3, 10, 12) + 1
    boxes = torch.tensor([[0.0, 0.0, 11.0, 9.0], [2.0, 3.0, 4.6, 5.0], [6.0, 1.0, 8.0, 2.0]])
    out = zero_pixels_in_boxes(image, boxes, np.array([0, 1, 0]))
    expected = image.clone()
    expected[:, 3:6, 2:5] = 0  # rows y1..y2, columns x1..int(x2), inclusive
    assert torch.equal(out, expected)
    assert torch.equal(image, torch.arange(3 * 10 * 12, dtype=torch.float32).view(3, 10, 12) + 1)  # input untouched


def test_mean_feature_of_visible_boxes():
    features = np.array([[1.0, 2.0], [3.0, 4.0], [10.0, 20.0]], dtype=np.float32)
    assert np.allclose(mean_unmasked_feature(features, np.array([0, 0, 1])), [2.0, 3.0])
    assert np.allclose(mean_unmasked_feature(features, np.array([1, 1, 1])), [14 / 3, 26 / 3])


@pytest.mark.parametrize("text,boxes,seq_len,expected", [
    (10, 5, 64, (10, 5)),  # fits
    (40, 40, 64, (32, 32)),  # alternate drops, text first on ties
    (60, 3, 20, (17, 3)),  # only text is cut
    (3, 100, 10, (3, 7)),  # only boxes are cut
    (2, 1, 2, (2, 1)),  # floors: 2 text tokens, 1 box
])
def test_joint_truncation(text, boxes, seq_len, expected):
    assert truncate_lengths(text, boxes, seq_len) == expected


def test_item_rng_depends_on_seed_epoch_index():
    draw = lambda *key: item_rng(*key).random(4).tolist()  # noqa: E731
    assert draw(5, 0, 7) == draw(5, 0, 7)
    assert draw(5, 0, 7) != draw(5, 1, 7) != draw(6, 0, 7)
    assert draw(5, 0, 7) != draw(5, 0, 8)
