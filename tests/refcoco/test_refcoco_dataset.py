"""RefCOCO+ samples on the toy world: candidates from the raw files, labels by IoU (the toy world's own +1 IoU),
flips that mirror boxes and swap left/right, aspect groups, and a missing detection."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from common.data.tokenizer import BertTokenizer
from common.data.transforms import VisualTransform
from data.shape_world.baselines import iou_plus_one
from refcoco.dataset import DETECTIONS_FILE, RefCOCODataset


def raw_json(toy_root, *parts):
    with open(os.path.join(toy_root, "coco", *parts)) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return BertTokenizer.from_pretrained_dir(minilm_dir)


def dataset(toy_root, tokenizer, boxes, flip_prob=0.0, split="train", scales=(96, 160)):
    return RefCOCODataset(os.path.join(toy_root, "coco"), split, boxes, VisualTransform(*scales, flip_prob), tokenizer)


@pytest.mark.parametrize("mode", ["gt", "proposal", "proposal+gt"])
def test_candidates_and_labels_from_the_raw_files(toy_root, tokenizer, mode):
    ds = dataset(toy_root, tokenizer, mode, scales=(120, 1000))  # small-world images: short side 120, kept
    anns = raw_json(toy_root, "annotations", "instances_train2014.json")["annotations"]
    dets = raw_json(toy_root, DETECTIONS_FILE)
    images = {i["id"]: i for i in raw_json(toy_root, "refcoco+", "instances.json")["images"]}
    refs_anns = {a["id"]: a for a in raw_json(toy_root, "refcoco+", "instances.json")["annotations"]}
    positives = 0
    for index in range(0, len(ds), 3):
        item, sample = ds[index], ds.samples[index]
        width, height = images[sample.image_id]["width"], images[sample.image_id]["height"]
        expected = [[0, 0, width - 1, height - 1]]
        xywh = []
        if "proposal" in mode:
            xywh += [d["box"] for d in dets if d["image_id"] == sample.image_id]
        if "gt" in mode:
            xywh += [a["bbox"] for a in anns if a["image_id"] == sample.image_id]
        expected += [[x, y, min(x + w, width - 1), min(y + h, height - 1)] for x, y, w, h in xywh]
        assert torch.allclose(item["boxes"], torch.tensor(expected, dtype=torch.float32), atol=1e-3)
        x, y, w, h = refs_anns[sample.ann_id]["bbox"]
        gt = [x, y, x + w, y + h]
        assert item["gt_box"].tolist() == gt
        labels = [float(iou_plus_one(b, [x, y, min(x + w, width - 1), min(y + h, height - 1)]) > 0.5)
                  for b in expected]
        assert item["labels"].tolist() == labels
        positives += sum(labels)
        assert item["im_info"].tolist() == [width, height, 1.0, 1.0]
        assert item["ref_id"] == sample.ref_id and item["index"] == index
    assert positives > 0


def test_flip_mirrors_boxes_and_swaps_left_right(toy_root, tokenizer):
    plain = dataset(toy_root, tokenizer, "proposal+gt", flip_prob=0.0)
    flipped = dataset(toy_root, tokenizer, "proposal+gt", flip_prob=1.0)
    with_side = [i for i, s in enumerate(plain.samples) if {"left", "right"} & set(s.tokens)]
    assert with_side, "the toy world should have left/right expressions"
    for index in with_side[:4] + [0]:
        a, b = plain[index], flipped[index]
        width = a["im_info"][0].item()
        mirrored = torch.stack([width - 1 - a["boxes"][:, 2], a["boxes"][:, 1], width - 1 - a["boxes"][:, 0],
                                a["boxes"][:, 3]], 1)
        assert torch.allclose(b["boxes"], mirrored, atol=1e-4)
        assert torch.equal(b["labels"], a["labels"])
        assert torch.equal(b["image"], a["image"].flip(-1))
        assert b["flipped"].item() and not a["flipped"].item()
        words = tokenizer.convert_ids_to_tokens(a["expression_ids"].tolist())
        swapped = {"left": "right", "right": "left"}
        assert tokenizer.convert_ids_to_tokens(b["expression_ids"].tolist()) == [swapped.get(w, w) for w in words]


def test_resize_scales_boxes_and_keeps_gt_in_original_pixels(toy_root, tokenizer):
    small = dataset(toy_root, tokenizer, "gt", scales=(60, 100))
    item = small[0]
    sx, sy = item["im_info"][2].item(), item["im_info"][3].item()
    assert sx < 1 and sy < 1
    native = dataset(toy_root, tokenizer, "gt", scales=(120, 1000))[0]
    expected_x = (native["boxes"][1:, [0, 2]] * sx).clamp(max=item["im_info"][0] - 1)
    assert torch.allclose(item["boxes"][1:, [0, 2]], expected_x, atol=1e-3)
    assert torch.equal(item["gt_box"], native["gt_box"])


def test_aspect_groups_follow_image_shape(toy_root, tokenizer):
    ds = dataset(toy_root, tokenizer, "proposal", split="val")
    images = {i["id"]: i for i in raw_json(toy_root, "refcoco+", "instances.json")["images"]}
    groups = ds.aspect_groups()
    expected = [int(images[s.image_id]["height"] >= images[s.image_id]["width"]) for s in ds.samples]
    assert groups == expected and set(groups) == {0, 1}


def test_image_without_detection_is_named(toy_root, tokenizer, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(os.path.join(toy_root, "coco", "refcoco+"), root / "refcoco+")
    dets = raw_json(toy_root, DETECTIONS_FILE)
    ds = dataset(toy_root, tokenizer, "proposal", split="val")
    dropped = ds.samples[0].image_id
    with open(root / DETECTIONS_FILE, "w") as f:
        json.dump([d for d in dets if d["image_id"] != dropped], f)
    with pytest.raises(ValueError, match=rf"res101_coco_minus_refer_notime_dets\.json.*{dropped}"):
        RefCOCODataset(str(root), "val", "proposal", VisualTransform(96, 160), tokenizer)


def test_unknown_box_mode_is_refused(toy_root, tokenizer):
    with pytest.raises(ValueError, match="gt.*proposal"):
        dataset(toy_root, tokenizer, "detections")
