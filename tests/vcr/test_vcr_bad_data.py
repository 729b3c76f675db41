"""Bad VCR data is named, never silently used: a broken jsonl line (test and val files), broken metadata boxes, an
unreadable image under DATASET.SKIP_UNREADABLE_IMAGES, and texts that the boxes leave no room for in the position
table (docs/GUARANTEES.md)."""
from __future__ import annotations

import json
import logging
import os
import re

import pytest
import torch
from vcr_fixtures import BOXES, tiny_cfg, vcr_line, write_vcr_dir

from common.data.boxes import BoxError
from common.data.collate import collate_dicts
from common.data.image_io import ImageReadError
from vcr.task import TASK

QUESTION = ["Why", "is", [0], "smiling", "?"]
ANSWERS = [[[0], "is", "happy", "."], ["Because", [1], "joked", "."], [[2], "ran", "."], ["No", "reason", "."]]
RATIONALES = [["A", "joke", "was", "told", "."], [[3], "is", "set", "."], ["It", "is", "sunny", "."], ["Unknown", "."]]


@pytest.fixture
def data(tmp_path) -> str:
    lines = {split: [vcr_line(n, split, QUESTION, ANSWERS, RATIONALES, 1, 0) for n in range(3)]
             for split in ("train", "val", "test")}
    return write_vcr_dir(str(tmp_path / "vcr"), lines)


@pytest.mark.parametrize("split, name", [("test", "test.jsonl"), ("val", "val.jsonl")])
def test_broken_json_line_names_file_and_line(data, vocab_only_dir, split, name):
    path = os.path.join(data, name)
    with open(path) as f:
        lines = f.readlines()
    lines[1] = lines[1][: len(lines[1]) // 2] + "\n"  # a line cut in the middle, as by a failed copy
    with open(path, "w") as f:
        f.writelines(lines)
    with pytest.raises(ValueError, match=rf"{re.escape(path)}:2: not a valid JSON line"):
        TASK.build_dataset(tiny_cfg(vocab_only_dir, data), split)


def test_broken_metadata_box_names_the_file(tmp_path, vocab_only_dir):
    boxes = [list(b) for b in BOXES]
    boxes[2][0] = boxes[2][2] + 4  # x1 beyond x2
    data = write_vcr_dir(str(tmp_path / "vcr"), {"train": [vcr_line(0, "train", QUESTION, ANSWERS, RATIONALES)]},
                         boxes=boxes)
    dataset = TASK.build_dataset(tiny_cfg(vocab_only_dir, data), "train")
    meta = os.path.join(data, "vcr1images", "movie_a", "img0.json")
    with pytest.raises(BoxError, match=rf"{re.escape(meta)}: box 2 .* is inverted"):
        dataset[0]


def test_skip_unreadable_images_gives_a_black_image(data, vocab_only_dir, caplog):
    image = os.path.join(data, "vcr1images", "movie_a", "img0.jpg")
    with open(image, "rb") as f:
        raw = f.read()
    with open(image, "wb") as f:
        f.write(raw[: len(raw) // 2])
    with pytest.raises(ImageReadError, match=re.escape(image)):
        TASK.build_dataset(tiny_cfg(vocab_only_dir, data), "train")[0]
    dataset = TASK.build_dataset(tiny_cfg(vocab_only_dir, data, "DATASET.SKIP_UNREADABLE_IMAGES", "true"), "train")
    with caplog.at_level(logging.WARNING):
        item = dataset[0]
    assert image in caplog.text and "SKIP_UNREADABLE_IMAGES" in caplog.text
    means = torch.tensor(dataset.transform.pixel_means).view(3, 1, 1)
    assert torch.equal(item["image"], -means.expand_as(item["image"]))
    with open(os.path.join(data, "vcr1images", "movie_a", "img0.json")) as f:
        meta = json.load(f)
    assert float(item["im_info"][0]) / float(item["im_info"][2]) == pytest.approx(meta["width"])


def test_texts_fit_the_position_table_the_boxes_leave(tmp_path, vocab_only_dir, caplog):
    long_question = ["Why"] + ["really"] * 80 + ["is", [0], "smiling", "?"]
    data = write_vcr_dir(str(tmp_path / "vcr"), {"train": [vcr_line(0, "train", long_question, ANSWERS, RATIONALES,
                                                                     1, 0)] * 2})
    cfg = tiny_cfg(vocab_only_dir, data, "NETWORK.VLBERT.max_position_embeddings", "32", "DATASET.SEQ_LEN", "64",
                   "DATASET.ONLY_USE_RELEVANT_DETS", "false")
    dataset = TASK.build_dataset(cfg, "train")
    with caplog.at_level(logging.WARNING):
        item = dataset[0]
    room = 32 - 3 - len(item["boxes"]) - 1  # [CLS] q [SEP] a [SEP], the boxes, [END]
    lengths = (item["question_ids"] > 0).sum(1) + (item["answer_ids"] > 0).sum(1)
    assert lengths.max() == room and "fewer than DATASET.SEQ_LEN 64" in caplog.text
    module = TASK.build_module(cfg).eval()
    with torch.no_grad():  # the same batch raised IndexError inside F.embedding before
        logits = module(collate_dicts([item, dataset[1]], dataset.PAD_RULES))["label_logits"]
    assert torch.isfinite(logits).all()


def test_describe_names_the_jsonl_line_annot_id_and_image(data, vocab_only_dir):
    """What the non-finite guard says of an item; QA2R test items also name the answer they are conditioned on."""
    path = os.path.join(data, "train.jsonl")
    with open(path) as f:
        second = json.loads(f.readlines()[1])
    dataset = TASK.build_dataset(tiny_cfg(vocab_only_dir, data), "train")
    image = os.path.join(data, "vcr1images", second["img_fn"])
    assert dataset.describe(1) == f"{path}:2 annot_id={second['annot_id']!r} (image {image})"
    test = TASK.build_dataset(tiny_cfg(vocab_only_dir, data, "DATASET.TASK", "QA2R"), "test")
    assert test.describe(6).endswith(", conditioned on answer 2)") and "test.jsonl:2 " in test.describe(6)
