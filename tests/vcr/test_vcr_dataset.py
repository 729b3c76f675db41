"""VCR reading: object references -> words and tags, truncation, masks, labels, and bad-input errors."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from vcr_fixtures import OBJECTS, vcr_line, write_vcr_dir

from common.data.tokenizer import BertTokenizer
from common.data.transforms import VisualTransform
from vcr.dataset import VCRDataset, polygons_to_mask
from vcr.module import assemble_pairs
from vcr.text import truncate_pair, truncate_triple

QUESTION = ["What", "are", [1, 3], "doing", "?"]
ANSWERS = [["Eating", "."], [[0], "rides", [2]], ["Sleeping"], ["Nothing"]]
RATIONALES = [["Because", [0], "is", "hungry"], ["No"], ["Yes"], ["Maybe"]]


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return BertTokenizer.from_pretrained_dir(minilm_dir)


def make_dataset(root, tokenizer, task="Q2A", split="train", seq_len=64, **kwargs):
    return VCRDataset(os.path.join(root, f"{split}.jsonl"), os.path.join(root, "vcr1images"), task,
                      tokenizer.tokenize, tokenizer.convert_tokens_to_ids, VisualTransform(48, 64),
                      test_mode=split == "test", seq_len=seq_len, **kwargs)


def words_and_tags(ids_row, tags_row, tokenizer):
    keep = ids_row > 0
    return tokenizer.convert_ids_to_tokens(ids_row[keep].tolist()), tags_row[keep].tolist()


def test_object_references_become_names_and_tags(tmp_path, tokenizer):
    # objects: 0 person -> names[0] "Casey", 1 person -> names[1] "Riley", 2 horse, 3 diningtable.
    root = write_vcr_dir(str(tmp_path), {"train": [vcr_line(0, "train", QUESTION, ANSWERS, RATIONALES, 1, 0)]})
    item = make_dataset(root, tokenizer)[0]
    words, tags = words_and_tags(item["question_ids"][1], item["question_tags"][1], tokenizer)
    assert words == ["what", "are", "riley", "and", "dining", "##table", "doing", "?"]
    assert tags == [0, 0, 2, 0, 4, 4, 0, 0]
    words, tags = words_and_tags(item["answer_ids"][1], item["answer_tags"][1], tokenizer)
    assert words == ["casey", "rides", "horse"]
    assert tags == [1, 0, 3]
    assert item["label"].item() == 1
    # [CLS] q [SEP] a [SEP]: segment 0 up to the first [SEP], 1 after; [CLS]/[SEP] tagged 0
    text = assemble_pairs(item["question_ids"][1:2], item["question_tags"][1:2], item["answer_ids"][1:2],
                          item["answer_tags"][1:2], cls_id=101, sep_id=102)
    assert tokenizer.convert_ids_to_tokens(text["input_ids"][0].tolist()) == [
        "[CLS]", "what", "are", "riley", "and", "dining", "##table", "doing", "?", "[SEP]", "casey", "rides", "horse",
        "[SEP]"]
    assert text["token_type_ids"][0].tolist() == [0] * 10 + [1] * 4
    assert text["tags"][0].tolist() == [0, 0, 0, 2, 0, 4, 4, 0, 0, 0, 1, 0, 3, 0]


def test_qa2r_segments_and_labels(tmp_path, tokenizer):
    root = write_vcr_dir(str(tmp_path), {
        "train": [vcr_line(0, "train", QUESTION, ANSWERS, RATIONALES, answer_label=1, rationale_label=2)],
        "test": [vcr_line(0, "test", QUESTION, ANSWERS, RATIONALES)]})
    item = make_dataset(root, tokenizer, task="QA2R")[0]
    assert item["label"].item() == 2
    words, _ = words_and_tags(item["question_ids"][3], item["question_tags"][3], tokenizer)
    assert words == ["what", "are", "riley", "and", "dining", "##table", "doing", "?", "casey", "rides", "horse"]
    words, tags = words_and_tags(item["answer_ids"][0], item["answer_tags"][0], tokenizer)
    assert (words, tags) == (["because", "casey", "is", "hungry"], [0, 1, 0, 0])
    # test mode: 4 items per question, item k conditioned on answer k % 4
    test_set = make_dataset(root, tokenizer, task="QA2R", split="test")
    assert len(test_set) == 4 and "label" not in test_set[2]
    words, _ = words_and_tags(test_set[2]["question_ids"][0], test_set[2]["question_tags"][0], tokenizer)
    assert words[-1] == "sleeping" and test_set[2]["answer_index"] == 2


def test_truncation_rules_by_hand():
    pieces = lambda n, tag=0: [(f"w{i}", tag) for i in range(n)]  # noqa: E731
    question = pieces(8)
    # q 8 + a 6 > 10: pop q (8>6), q (7>6), a on the tie (6=6), q (6>5) -> 5 + 5
    q, a = truncate_pair(question, pieces(6), 10)
    assert (len(q), len(a)) == (5, 5) and len(question) == 8
    # QA2R: pop r while it is longer than q+a, else q down to 1 piece, else a.
    # 3+2+9: r 9->5 (r > 5 each time), then r 5 = q+a 5 -> q 3->2, then r 5 > 4 -> r 4: total 8
    q, a, r = truncate_triple(pieces(3), pieces(2), pieces(9), 8)
    assert (len(q), len(a), len(r)) == (2, 2, 4)
    q, a, r = truncate_triple(pieces(3), pieces(4), pieces(2), 4)
    assert (len(q), len(a), len(r)) == (1, 1, 2)


def test_shared_question_is_not_mutated_across_answers(tmp_path, tokenizer):
    long_answer = ["a", "b", "c", "d", "e", "f"]
    answers = [long_answer, ["yes"], long_answer, ["no"]]
    question = ["one", "two", "three", "four", "five", "six", "seven", "eight"]
    root = write_vcr_dir(str(tmp_path), {"train": [vcr_line(0, "train", question, answers, RATIONALES)]})
    item = make_dataset(root, tokenizer, seq_len=10)[0]
    q_lengths = (item["question_ids"] > 0).sum(1).tolist()
    a_lengths = (item["answer_ids"] > 0).sum(1).tolist()
    # each answer truncates its own copy of the 8-piece question (hand-worked: 6-piece answer -> 5 + 5)
    assert q_lengths == [5, 8, 5, 8] and a_lengths == [5, 1, 5, 1]


def test_boxes_masks_and_classes(tmp_path, tokenizer):
    root = write_vcr_dir(str(tmp_path), {"train": [vcr_line(0, "train", QUESTION, ANSWERS, RATIONALES)]})
    item = make_dataset(root, tokenizer)[0]
    # 64 x 48 image, SCALES (48, 64): already the target size, so boxes are the metadata's
    assert item["boxes"][0].tolist() == [0.0, 0.0, 63.0, 47.0]
    assert item["boxes"][1:].tolist() == [[2, 2, 20, 40], [22, 4, 40, 44], [30, 10, 60, 46], [10, 30, 50, 47]]
    assert item["classes"].tolist() == [0, 1, 1, 18, 61]  # __background__, person, person, horse, diningtable
    assert item["segms"].shape == (5, 14, 14) and bool((item["segms"] == 1).all())  # polygons = whole boxes
    assert item["im_info"].tolist() == [64.0, 48.0, 1.0, 1.0]


def test_polygon_mask_is_relative_to_the_box():
    box = [10, 20, 24, 34]  # 14 x 14 pixels -> one mask cell per pixel
    left_half = [[[10, 20], [17, 20], [17, 34], [10, 34]]]
    mask = polygons_to_mask(left_half, box, 14)
    assert mask[:, :7].sum() == 14 * 7 and mask[:, 8:].sum() == 0


def test_relevant_dets_reindex_in_order_of_first_mention(tmp_path, tokenizer):
    answers = [[[2], "runs"], ["x"], ["y"], ["z"]]
    rationales = [["r"]] * 4
    root = write_vcr_dir(str(tmp_path), {"train": [vcr_line(0, "train", ["Is", [3], "wet", "?"], answers, rationales)]})
    item = make_dataset(root, tokenizer, only_use_relevant_dets=True)[0]
    assert item["classes"].tolist() == [0, 61, 18]  # image, diningtable (mentioned first), horse
    assert words_and_tags(item["question_ids"][0], item["question_tags"][0], tokenizer)[1] == [0, 1, 1, 0, 0]
    assert item["answer_tags"][0, 0].item() == 2


def test_out_of_range_object_index_names_file_line_and_annot_id(tmp_path, tokenizer):
    bad_answers = [["ok"], ["fine"], [[7], "left"], ["no"]]
    root = write_vcr_dir(str(tmp_path), {"train": [vcr_line(0, "train", QUESTION, ANSWERS, RATIONALES),
                                                   vcr_line(1, "train", QUESTION, bad_answers, RATIONALES)]})
    with pytest.raises(ValueError, match=r"train\.jsonl:2 annot_id='train-1'.*object index 7"):
        make_dataset(root, tokenizer)


def test_index_beyond_metadata_boxes_names_file_line_and_annot_id(tmp_path, tokenizer):
    root = write_vcr_dir(str(tmp_path), {"train": [vcr_line(0, "train", QUESTION, ANSWERS, RATIONALES)]})
    meta_path = os.path.join(root, "vcr1images", "movie_a", "img0.json")
    with open(meta_path) as f:
        meta = json.load(f)
    meta["boxes"], meta["segms"] = meta["boxes"][:2], meta["segms"][:2]
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    dataset = make_dataset(root, tokenizer)
    with pytest.raises(ValueError, match=r"train\.jsonl:1 annot_id='train-0'.*object index 3.*img0\.json"):
        dataset[0]


def test_unknown_object_name_is_reported(tmp_path, tokenizer):
    line = vcr_line(0, "train", QUESTION, ANSWERS, RATIONALES)
    line["objects"] = OBJECTS[:3] + ["dining table"]
    root = write_vcr_dir(str(tmp_path), {"train": [line]})
    with pytest.raises(ValueError, match=r"train\.jsonl:1.*'dining table'"):
        make_dataset(root, tokenizer)


def test_flip_mirrors_masks_not_text(tmp_path, tokenizer):
    root = write_vcr_dir(str(tmp_path), {"train": [vcr_line(0, "train", QUESTION, ANSWERS, RATIONALES)]})
    plain = make_dataset(root, tokenizer)[0]
    flipped_set = make_dataset(root, tokenizer)
    flipped_set.transform = VisualTransform(48, 64, flip_prob=1.0)
    flipped = flipped_set[0]
    assert torch.equal(flipped["question_ids"], plain["question_ids"])
    assert flipped["boxes"][1].tolist() == [63 - 20, 2, 63 - 2, 40]
    assert torch.equal(flipped["image"], plain["image"].flip(-1))
    np.testing.assert_array_equal(flipped["segms"].numpy(), plain["segms"].flip(-1).numpy())
