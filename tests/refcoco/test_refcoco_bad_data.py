"""Bad RefCOCO+ data is named, never silently used: a damaged refs pickle, broken candidate boxes, an unreadable image
under DATASET.SKIP_UNREADABLE_IMAGES and an expression longer than the position table (docs/GUARANTEES.md)."""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil

import numpy as np
import pytest
import torch

from common.data.collate import collate_dicts
from common.data.image_io import ImageReadError
from refcoco.dataset import DETECTIONS_FILE, image_path
from refcoco.refer import Refer, ReferFormatError, load_refs_pickle
from refcoco.task import TASK


@pytest.fixture
def world(toy_root, tmp_path) -> str:
    """A copy of the toy world's coco folder that a test may damage; returns the copy's coco path."""
    shutil.copytree(os.path.join(toy_root, "coco"), tmp_path / "coco",
                    ignore=shutil.ignore_patterns("train2017", "val2014", "test2015", "vgbua_res101_precomputed"))
    return str(tmp_path / "coco")


def test_random_bytes_are_not_a_refs_pickle(tmp_path):
    path = str(tmp_path / "refs(unc).p")
    for seed in range(400):  # damaged pickles fail in many ways (huge lengths, bad opcodes, truncation)
        with open(path, "wb") as f:
            f.write(np.random.default_rng(seed).bytes(2000))
        with pytest.raises(ReferFormatError, match=r"refs\(unc\)\.p"):
            load_refs_pickle(path)


def test_refs_with_the_wrong_structure_are_refused(toy_root, tmp_path):
    with open(os.path.join(toy_root, "coco", "refcoco+", "refs(unc).p"), "rb") as f:
        refs = pickle.load(f)  # the test's own trusted copy
    refs[4]["sentences"] = [{"sent_id": 1, "tokens": "a string, not a word list"}]
    path = str(tmp_path / "refs(unc).p")
    with open(path, "wb") as f:
        pickle.dump(refs, f)
    with pytest.raises(ReferFormatError, match=rf"ref #4 \(ref_id {refs[4]['ref_id']}\): 'sentences' must be"):
        load_refs_pickle(path)


def test_inverted_detection_box_is_refused_at_start(world, tiny_cfg):
    path = os.path.join(world, DETECTIONS_FILE)
    with open(path) as f:
        dets = json.load(f)
    dets[5]["box"][2] = -3.0  # a negative width: x2 < x1
    with open(path, "w") as f:
        json.dump(dets, f)
    with pytest.raises(ValueError, match=rf"{re.escape(path)}: box \d+ .* is inverted"):
        TASK.build_dataset(tiny_cfg("DATASET.DATASET_PATH", world, "DATASET.TRAIN_BOXES", "proposal"), "train")


def test_skip_unreadable_images_gives_a_black_image(world, tiny_cfg, caplog):
    dataset = TASK.build_dataset(tiny_cfg("DATASET.DATASET_PATH", world), "train")
    sample = dataset.samples[0]
    path = image_path(world, sample.image_id)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=re.escape(path)):
        dataset[0]
    skipping = TASK.build_dataset(tiny_cfg("DATASET.DATASET_PATH", world, "DATASET.SKIP_UNREADABLE_IMAGES", "true"),
                                  "train")
    with caplog.at_level(logging.WARNING):
        item = skipping[0]
    assert path in caplog.text and "SKIP_UNREADABLE_IMAGES" in caplog.text
    means = torch.tensor(skipping.transform.pixel_means).view(3, 1, 1)
    assert torch.equal(item["image"], -means.expand_as(item["image"]))
    width, height = skipping.refer.image_size(sample.image_id)
    assert float(item["im_info"][0]) / float(item["im_info"][2]) == pytest.approx(width)
    assert float(item["im_info"][1]) / float(item["im_info"][3]) == pytest.approx(height)


def test_long_expression_is_cut_to_the_position_table(world, tiny_cfg, caplog):
    cfg = tiny_cfg("DATASET.DATASET_PATH", world, "NETWORK.VLBERT.max_position_embeddings", "64")
    refer = Refer(world, "refcoco+", "unc")
    dataset = TASK.build_dataset(cfg, "train")
    dataset.refer = refer
    sample = dataset.samples[0]
    dataset.samples[0] = type(sample)(**{**sample.__dict__, "tokens": ("the",) * 100 + ("red", "ball")})
    with caplog.at_level(logging.WARNING):
        item = dataset[0]
    assert len(item["expression_ids"]) == 64 - 2 - len(item["boxes"]) - 1  # [CLS] expr [SEP], boxes, [END]
    assert f"ref {sample.ref_id} sentence {sample.sent_id}: text of 102 wordpieces" in caplog.text
    module = TASK.build_module(cfg).eval()
    with torch.no_grad():
        logits = module(collate_dicts([item, dataset[1]], dataset.PAD_RULES))["logits"]
    assert torch.isfinite(logits).all()


def test_describe_names_ref_sentence_and_image(world, tiny_cfg):
    dataset = TASK.build_dataset(tiny_cfg("DATASET.DATASET_PATH", world), "train")
    refs = {r["ref_id"]: r for r in load_refs_pickle(os.path.join(world, "refcoco+", "refs(unc).p"))}
    sample = dataset.samples[0]
    ref = refs[sample.ref_id]
    assert sample.sent_id in [s["sent_id"] for s in ref["sentences"]]
    image = os.path.join(world, "train2014", f"COCO_train2014_{ref['image_id']:012d}.jpg")
    assert dataset.describe(0) == f"ref {ref['ref_id']} sentence {sample.sent_id} (image {ref['image_id']}: {image})"
    assert os.path.isfile(image)
