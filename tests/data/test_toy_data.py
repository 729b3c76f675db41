"""The toy world against the real formats: determinism, pycocotools, boxes inside images, VCR indices, RefCOCO+
ids, VQA pairing and answers, CC paths in folder and zip mode, and answer balance (checked independently)."""
from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import pickle
import zipfile
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from data.shape_world import generate
from data.shape_world.baselines import iou_plus_one

NO_SPACE_COCO = {"person", "sportsball", "tv", "kite", "car", "stopsign"}


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("toy_a"))
    generate(root, seed=0, size="small")
    return root


def _read_json(root, *parts):
    with open(os.path.join(root, *parts), encoding="utf-8") as f:
        return json.load(f)


def _read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _hashes(root: str) -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _decode(text: str, n: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(n, -1)


def test_same_seed_same_bytes_other_seed_differs(toy_root, tmp_path):
    again, other = str(tmp_path / "again"), str(tmp_path / "other")
    generate(again, seed=0, size="small")
    generate(other, seed=1, size="small")
    first, second = _hashes(toy_root), _hashes(again)
    assert len(first) > 300
    assert first == second  # every file, images included
    third = _hashes(other)
    key = os.path.join("coco", "vqa", "v2_mscoco_train2014_annotations.json")
    assert third[key] != first[key]


def test_coco_instance_files_load_and_masks_lie_in_boxes(toy_root):
    from pycocotools.coco import COCO

    for image_set in ("train2014", "val2014", "test2015", "val2017"):
        name = "image_info_test2015" if image_set == "test2015" else f"instances_{image_set}"
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(os.path.join(toy_root, "coco", "annotations", f"{name}.json"))
        assert len(coco.cats) == 80 and coco.cats[13]["name"] == "stop sign" and coco.cats[90]["name"] == "toothbrush"
        assert sorted(im["file_name"] for im in coco.imgs.values()) == sorted(
            os.listdir(os.path.join(toy_root, "coco", image_set)))
        for ann in coco.anns.values():
            ys, xs = np.nonzero(coco.annToMask(ann))
            x, y, w, h = ann["bbox"]
            assert xs.min() >= x and xs.max() < x + w and ys.min() >= y and ys.max() < y + h
            assert 0.5 * len(xs) < ann["area"] < 2.0 * len(xs)
    assert len(coco.anns) > 0


def _image_size(path: str) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.mode == "RGB" and im.format == "JPEG", path
        return im.size


def test_every_box_lies_inside_its_image(toy_root):
    coco = os.path.join(toy_root, "coco")
    for image_set in ("train2014", "val2014"):
        doc = _read_json(coco, "annotations", f"instances_{image_set}.json")
        sizes = {im["id"]: _image_size(os.path.join(coco, image_set, im["file_name"])) for im in doc["images"]}
        for im in doc["images"]:
            assert (im["width"], im["height"]) == sizes[im["id"]]
        for ann in doc["annotations"]:
            x, y, w, h = ann["bbox"]
            width, height = sizes[ann["image_id"]]
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= width and y + h <= height
        folder = os.path.join(coco, "vgbua_res101_precomputed", "trainval2014_resnet101_faster_rcnn_genome")
        for image_id, (width, height) in sizes.items():
            rec = _read_json(folder, f"{image_id}.json")
            n = rec["num_boxes"]
            boxes = _decode(rec["boxes"], n)
            assert (rec["image_w"], rec["image_h"]) == (width, height) and boxes.shape == (n, 4)
            assert _decode(rec["features"], n).shape == (n, 2048) and _decode(rec["classes"], n).shape == (n, 1601)
            np.testing.assert_allclose(_decode(rec["classes"], n).sum(1), 1.0, rtol=1e-4)
            assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width - 1).all() and (boxes[:, 3] <= height - 1).all()
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    for det in _read_json(coco, "refcoco+", "proposal", "res101_coco_minus_refer_notime_dets.json"):
        width, height = _image_size(os.path.join(coco, "train2014", f"COCO_train2014_{det['image_id']:012d}.jpg"))
        x, y, w, h = det["box"]
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height and det["det_id"] == det["h5_id"]


def _object_refs(tokens):
    return [i for t in tokens if isinstance(t, list) for i in t]


def test_vcr_references_point_at_metadata_boxes(toy_root):
    vcr = os.path.join(toy_root, "vcr")
    for split in ("train", "val", "test"):
        rows = _read_jsonl(os.path.join(vcr, f"{split}.jsonl"))
        assert rows and len({r["annot_id"] for r in rows}) == len(rows)
        for row in rows:
            meta = _read_json(vcr, "vcr1images", row["metadata_fn"])
            width, height = _image_size(os.path.join(vcr, "vcr1images", row["img_fn"]))
            assert (meta["width"], meta["height"]) == (width, height) and meta["names"] == row["objects"]
            assert len(meta["boxes"]) == len(meta["segms"]) == len(row["objects"])
            assert set(row["objects"]) <= NO_SPACE_COCO and "person" in row["objects"]
            for x1, y1, x2, y2, score in meta["boxes"]:
                assert 0 <= x1 < x2 <= width - 1 and 0 <= y1 < y2 <= height - 1 and 0 < score <= 1
            assert all(len(poly) >= 3 and all(len(p) == 2 for p in poly) for segm in meta["segms"] for poly in segm)
            assert len(row["answer_choices"]) == 4 and len(row["rationale_choices"]) == 4
            tokens = row["question"] + sum(row["answer_choices"] + row["rationale_choices"], [])
            assert all(0 <= i < len(meta["boxes"]) for i in _object_refs(tokens))
            if split == "test":
                assert "answer_label" not in row and "rationale_label" not in row
            else:
                assert row["answer_label"] in range(4) and row["rationale_label"] in range(4)


def _xyxy_area(box) -> float:
    return (box[2] - box[0] + 1) * (box[3] - box[1] + 1)


def test_biggest_items_name_the_object_at_least_1_5x_the_others(toy_root):
    """VCR "which is the biggest" items: the labelled answer and rationale name the object whose metadata box is
    >= 1.5x each other choice's; RefCOCO+ "biggest" sentences refer to the instance >= 1.5x every other one."""
    vcr = os.path.join(toy_root, "vcr")
    seen = 0
    for split in ("train", "val"):
        for row in _read_jsonl(os.path.join(vcr, f"{split}.jsonl")):
            if "biggest" not in row["question"]:
                continue
            areas = [_xyxy_area(b) for b in _read_json(vcr, "vcr1images", row["metadata_fn"])["boxes"]]
            for choices, label in ((row["answer_choices"], row["answer_label"]),
                                   (row["rationale_choices"], row["rationale_label"])):
                named = [choice[0][0] for choice in choices]
                assert len(set(named)) == 4
                assert all(areas[named[label]] >= 1.5 * areas[k] for i, k in enumerate(named) if i != label)
            seen += 1
    assert seen > 0
    folder = os.path.join(toy_root, "coco", "refcoco+")
    with open(os.path.join(folder, "refs(unc).p"), "rb") as f:
        refs = pickle.load(f)
    anns = _read_json(folder, "instances.json")["annotations"]
    biggest_refs = [r for r in refs if any("biggest" in s["sent"] for s in r["sentences"])]
    assert biggest_refs
    for ref in biggest_refs:
        area = {a["id"]: a["bbox"][2] * a["bbox"][3] for a in anns if a["image_id"] == ref["image_id"]}
        assert all(area[ref["ann_id"]] >= 1.5 * v for k, v in area.items() if k != ref["ann_id"])


def test_refcoco_refs_match_instances_splits_and_detections(toy_root):
    folder = os.path.join(toy_root, "coco", "refcoco+")
    with open(os.path.join(folder, "refs(unc).p"), "rb") as f:
        refs = pickle.load(f)
    instances = _read_json(folder, "instances.json")
    anns = {a["id"]: a for a in instances["annotations"]}
    train_ids = {im["id"] for im in _read_json(toy_root, "coco", "annotations", "instances_train2014.json")["images"]}
    assert isinstance(refs, list) and {r["split"] for r in refs} == {"train", "val", "testA", "testB"}
    sent_ids = [s["sent_id"] for r in refs for s in r["sentences"]]
    assert len(sent_ids) == len(set(sent_ids))
    for ref in refs:
        assert ref["ann_id"] in anns and anns[ref["ann_id"]]["category_id"] == ref["category_id"]
        assert anns[ref["ann_id"]]["image_id"] == ref["image_id"] in train_ids
        assert ref["sent_ids"] == [s["sent_id"] for s in ref["sentences"]]
        assert all(s["tokens"] == s["sent"].split() and s["raw"].lower() == s["sent"] for s in ref["sentences"])
        if ref["split"].startswith("test"):
            assert (ref["category_id"] == 1) == (ref["split"] == "testA")
    dets = _read_json(folder, "proposal", "res101_coco_minus_refer_notime_dets.json")
    assert {im["id"] for im in instances["images"]} <= {d["image_id"] for d in dets}


def test_vqa_questions_and_annotations_pair_up(toy_root):
    vqa = os.path.join(toy_root, "coco", "vqa")
    vocab = [line.strip() for line in open(os.path.join(vqa, "answers_vqa.txt")) if line.strip()]
    assert vocab[0] == "<unk>"
    for image_set in ("train2014", "val2014"):
        qs = _read_json(vqa, f"v2_OpenEnded_mscoco_{image_set}_questions.json")
        anns = _read_json(vqa, f"v2_mscoco_{image_set}_annotations.json")["annotations"]
        assert {"info", "task_type", "data_type", "data_subtype", "license"} <= set(qs)
        assert [q["question_id"] for q in qs["questions"]] == [a["question_id"] for a in anns]
        assert [q["image_id"] for q in qs["questions"]] == [a["image_id"] for a in anns]
        for a in anns:
            assert [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
            assert a["answer_type"] in ("yes/no", "number", "other") and a["multiple_choice_answer"] in vocab
            assert Counter(x["answer"] for x in a["answers"]).most_common(1)[0][0] == a["multiple_choice_answer"]
            assert a["question_id"] // 1000 == a["image_id"]
    test = _read_json(vqa, "v2_OpenEnded_mscoco_test2015_questions.json")["questions"]
    dev = _read_json(vqa, "v2_OpenEnded_mscoco_test-dev2015_questions.json")["questions"]
    assert 0 < len(dev) < len(test) and all(q in test for q in dev)


def test_conceptual_captions_paths_resolve_in_folder_and_zip_mode(toy_root):
    cc = os.path.join(toy_root, "conceptual-captions")
    for split in ("train", "val"):
        rows = _read_jsonl(os.path.join(cc, f"{split}_frcnn.json"))
        assert rows and all(isinstance(r["caption"], list) and all(isinstance(w, str) for w in r["caption"])
                            for r in rows)
        for row in rows:
            for key in ("image", "frcnn"):
                archive, member = row[key].split("@")
                folder_path = os.path.join(cc, archive[: -len(".zip")], member.lstrip("/"))
                with zipfile.ZipFile(os.path.join(cc, archive)) as zf, open(folder_path, "rb") as f:
                    info = zf.getinfo(member.lstrip("/"))
                    assert info.compress_type == zipfile.ZIP_STORED and zf.read(info) == f.read()
            rec = _read_json(cc, row["frcnn"].replace(".zip@", ""))
            size = _image_size(os.path.join(cc, row["image"].replace(".zip@", "")))
            assert (rec["image_w"], rec["image_h"]) == size
            assert _decode(rec["classes"], rec["num_boxes"]).shape[1] == 1601


def _soft_score(prediction, answers):
    """VQA accuracy written out as the official leave-one-out loop."""
    scores = []
    for i in range(len(answers)):
        others = [a["answer"] for j, a in enumerate(answers) if j != i]
        scores.append(min(1.0, others.count(prediction) / 3))
    return sum(scores) / len(scores)


def test_vqa_answers_are_balanced_and_baselines_agree(toy_root):
    vqa = os.path.join(toy_root, "coco", "vqa")
    train = _read_json(vqa, "v2_mscoco_train2014_annotations.json")["annotations"]
    val = _read_json(vqa, "v2_mscoco_val2014_annotations.json")["annotations"]
    majority = Counter(a["multiple_choice_answer"] for a in train).most_common(1)[0][0]
    exact = sum(a["multiple_choice_answer"] == majority for a in val) / len(val)
    assert exact < 0.35
    soft = sum(_soft_score(majority, a["answers"]) for a in val) / len(val)
    baselines = _read_json(toy_root, "baselines.json")
    assert baselines["vqa"]["val2014"]["majority"] == pytest.approx(soft) and soft < 0.6
    per_type = Counter((a["question_type"], a["multiple_choice_answer"]) for a in train)
    for question_type in {a["question_type"] for a in train}:
        counts = [c for (t, _), c in per_type.items() if t == question_type]
        assert max(counts) <= 3 * min(counts) + 4, (question_type, counts)


def test_iou_plus_one_by_hand():
    assert iou_plus_one([0, 0, 9, 9], [5, 0, 14, 9]) == pytest.approx(50 / 150)
    assert iou_plus_one([0, 0, 9, 9], [10, 0, 19, 9]) == 0.0


def test_precomputed_features_tell_categories_apart(toy_root):
    """Nearest class mean over train boxes (matched to instances by IoU) classifies val boxes."""
    coco = os.path.join(toy_root, "coco")
    folder = os.path.join(coco, "vgbua_res101_precomputed", "trainval2014_resnet101_faster_rcnn_genome")

    def labelled(image_set):
        doc = _read_json(coco, "annotations", f"instances_{image_set}.json")
        out = []
        for im in doc["images"]:
            rec = _read_json(folder, f"{im['id']}.json")
            boxes, feats = _decode(rec["boxes"], rec["num_boxes"]), _decode(rec["features"], rec["num_boxes"])
            gts = [a for a in doc["annotations"] if a["image_id"] == im["id"]]
            for box, feat in zip(boxes, feats, strict=True):
                for a in gts:
                    x, y, w, h = a["bbox"]
                    if iou_plus_one(box.tolist(), [x, y, x + w - 1, y + h - 1]) > 0.5:
                        out.append((a["category_id"], feat))
        return out

    train, val = labelled("train2014"), labelled("val2014")
    cats = sorted({c for c, _ in train})
    means = np.stack([np.mean([f for c, f in train if c == k], axis=0) for k in cats])
    hits = [cats[int(np.argmin(((means - f) ** 2).sum(1)))] == c for c, f in val]
    assert len(cats) == 6 and np.mean(hits) > 0.9
