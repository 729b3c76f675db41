"""Pretraining datasets on the toy world, checked against the files read independently (box files, COCO json)."""
from __future__ import annotations

import json
import os
import shutil
import zipfile

import numpy as np
import pytest
import torch

from common.data.box_files import BoxFileError, encode_array, read_box_file
from common.data.captions import ConceptualCaptionsDataset, folder_path, read_caption_index
from common.data.collate import collate_dicts
from common.data.masking import IGNORE_LABEL
from common.data.transforms import VisualTransform
from pretrain.datasets.caption_sample import CaptionSampleBuilder
from pretrain.datasets.coco_captions import COCOCaptionsDataset
from pretrain.datasets.general_corpus import GeneralCorpusDataset
from pretrain.losses import mvrc_loss, valid_region_rows


def _builder(tokenizer, flip_prob=0.0, **kwargs) -> CaptionSampleBuilder:
    return CaptionSampleBuilder(tokenizer, VisualTransform(min_size=120, max_size=200, flip_prob=flip_prob), **kwargs)


def _cc(toy_root, tokenizer, precomputed=True, zip_mode=False, seed=0, **kwargs) -> ConceptualCaptionsDataset:
    return ConceptualCaptionsDataset(os.path.join(toy_root, "conceptual-captions"), "train",
                                     _builder(tokenizer, **kwargs), precomputed=precomputed, zip_mode=zip_mode,
                                     seed=seed)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


def test_folder_path_rewriting():
    assert folder_path("train_image.zip@/00000042.jpg") == "train_image/00000042.jpg"
    assert folder_path("train_frcnn.3.zip@/00000042.json") == "train_frcnn/00000042.json"
    assert folder_path("val_frcnn.10.zip@00000001.json") == "val_frcnn/00000001.json"
    assert folder_path("plain/file.json") == "plain/file.json"


def test_zip_and_folder_modes_read_the_same_items(toy_root, tokenizer):
    for precomputed in (True, False):
        folder = _cc(toy_root, tokenizer, precomputed=precomputed)
        zipped = _cc(toy_root, tokenizer, precomputed=precomputed, zip_mode=True)
        for index in (0, 7):
            assert _same(folder[index], zipped[index])


def test_precomputed_boxes_sorted_with_whole_image_first(toy_root, tokenizer):
    data = _cc(toy_root, tokenizer)
    for index in range(6):
        item = data[index]
        record = data.records[index]
        path = os.path.join(toy_root, "conceptual-captions", folder_path(record["frcnn"]))
        raw = read_box_file(path)
        order = np.argsort(-raw["classes"].max(1), kind="stable")
        kept = item["boxes"].shape[0] - 1
        assert kept == raw["num_boxes"]  # the toy captions and boxes fit SEQ_LEN 64
        assert torch.allclose(item["boxes"][0], torch.tensor([0.0, 0.0, raw["image_w"] - 1, raw["image_h"] - 1]))
        assert np.allclose(item["boxes"][1:].numpy(), raw["boxes"][order])
        assert np.allclose(item["box_features"][1:].numpy(), raw["features"][order])
        visible = item["mvrc_ops"][1:].numpy() != 1
        assert np.allclose(item["box_features"][0].numpy(), raw["features"][order][visible].mean(0), atol=1e-5)
        selected = item["mvrc_labels"].sum(1) > 0
        assert not selected[0]
        assert np.allclose(item["mvrc_labels"][1:][selected[1:]].numpy(), raw["classes"][order][selected[1:].numpy()])
        assert item["text"][0] == tokenizer.cls_id and item["text"][-1] == tokenizer.sep_id
        assert item["mlm_labels"][0] == item["mlm_labels"][-1] == IGNORE_LABEL


def test_end_to_end_pixels_zeroed_inside_hidden_boxes_only(toy_root, tokenizer):
    masked = _cc(toy_root, tokenizer, precomputed=False, mask_raw_pixels=True)
    plain = _cc(toy_root, tokenizer, precomputed=False, mask_raw_pixels=False)
    hidden_seen = 0
    for index in range(12):
        a, b = masked[index], plain[index]
        assert torch.equal(a["mvrc_ops"], b["mvrc_ops"])
        inside = torch.zeros(a["image"].shape[1:], dtype=torch.bool)
        for box, op in zip(a["boxes"].tolist(), a["mvrc_ops"].tolist(), strict=True):
            if op == 1:
                inside[int(box[1]):int(box[3]) + 1, int(box[0]):int(box[2]) + 1] = True
        hidden_seen += int(a["mvrc_ops"].sum())
        assert torch.all(a["image"][:, inside] == 0)
        assert torch.equal(a["image"][:, ~inside], b["image"][:, ~inside])
        assert not torch.all(b["image"][:, inside] == 0) or not inside.any()
    assert hidden_seen > 0


def test_masks_reproducible_per_epoch(toy_root, tokenizer):
    data = _cc(toy_root, tokenizer)
    first = [data[i]["mlm_labels"] for i in range(10)]
    assert all(torch.equal(a, data[i]["mlm_labels"]) for i, a in enumerate(first))
    data.set_epoch(1)
    assert any(not torch.equal(a, data[i]["mlm_labels"]) for i, a in enumerate(first))


def test_relationship_negatives_and_flip_swaps_left_right(toy_root, tokenizer):
    data = _cc(toy_root, tokenizer, with_rel_task=True, with_mlm_task=False)
    labels = [int(data[i]["relationship_label"]) for i in range(len(data))]
    assert 0.2 < np.mean(labels) < 0.8
    for i, label in enumerate(labels):
        own = data.builder.text_ids(data.records[i]["caption"])[0]
        assert (data[i]["text"].tolist() == own) == (label == 1)
    flipped = _cc(toy_root, tokenizer, flip_prob=1.0, with_mlm_task=False)
    left, right = tokenizer.convert_tokens_to_ids(["left", "right"])
    with_left = [i for i, r in enumerate(flipped.records) if "left" in r["caption"]]
    assert with_left, "the toy captions should contain 'left'"
    text = flipped[with_left[0]]["text"].tolist()
    assert right in text and left not in text


def _write_case(root: str, features_rows: int, num_boxes: int = 3, name: str = "00000000", append: bool = False) -> str:
    """A CC folder with one sample whose box file has `num_boxes` boxes and `features_rows` feature rows (with
    `append`, the sample is added to the folder's annotation file)."""
    os.makedirs(os.path.join(root, "train_frcnn"), exist_ok=True)
    box_file = os.path.join(root, "train_frcnn", f"{name}.json")
    classes = np.eye(num_boxes, 1601, dtype=np.float32)
    boxes = np.tile(np.array([[2.0, 3.0, 30.0, 20.0]], dtype=np.float32), (num_boxes, 1))
    with open(box_file, "w") as f:
        json.dump({"image_w": 50, "image_h": 40, "num_boxes": num_boxes, "boxes": encode_array(boxes),
                   "classes": encode_array(classes), "features": encode_array(np.ones((features_rows, 2048)))}, f)
    with open(os.path.join(root, "train_frcnn.json"), "a" if append else "w") as f:
        f.write(json.dumps({"image": f"train_image.zip@/{name}.jpg", "caption": ["a", "red", "cat"],
                            "frcnn": f"train_frcnn.zip@/{name}.json"}) + "\n")
    return box_file


def test_feature_count_disagreeing_with_boxes_names_the_file(tmp_path, tokenizer):
    box_file = _write_case(str(tmp_path), features_rows=2)
    data = ConceptualCaptionsDataset(str(tmp_path), "train", _builder(tokenizer), precomputed=True)
    with pytest.raises(BoxFileError, match="00000000.json.*features"):
        data[0]
    assert os.path.isfile(box_file)


def test_image_without_detections_trains_with_no_mvrc_target(tmp_path, tokenizer):
    _write_case(str(tmp_path), features_rows=0, num_boxes=0)
    _write_case(str(tmp_path), features_rows=3, name="00000001", append=True)
    data = ConceptualCaptionsDataset(str(tmp_path), "train", _builder(tokenizer), precomputed=True,
                                     num_classes=1601)
    empty, full = data[0], data[1]
    assert empty["boxes"].shape == (1, 4) and torch.isfinite(empty["box_features"]).all()  # the whole image only
    assert empty["mvrc_labels"].shape == (1, 1601) and full["mvrc_labels"].shape == (4, 1601)
    logits = torch.zeros(1, 4, 1601)
    alone = collate_dicts([empty], ConceptualCaptionsDataset.PAD_RULES)
    assert mvrc_loss(logits[:, :1], alone["mvrc_labels"]).item() == 0.0  # no target, no error
    both = collate_dicts([empty, full], ConceptualCaptionsDataset.PAD_RULES)
    assert both["mvrc_labels"].shape == (2, 4, 1601) and not valid_region_rows(both["mvrc_labels"])[0].any()
    assert torch.isfinite(mvrc_loss(torch.cat([logits, logits]), both["mvrc_labels"]))


def test_missing_zip_entry_names_archive_and_entry(tmp_path, tokenizer):
    _write_case(str(tmp_path), features_rows=3)
    archive = os.path.join(str(tmp_path), "train_frcnn.zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        z.writestr("other.json", "{}")
    shutil.rmtree(os.path.join(str(tmp_path), "train_frcnn"))
    data = ConceptualCaptionsDataset(str(tmp_path), "train", _builder(tokenizer), precomputed=True, zip_mode=True)
    with pytest.raises(FileNotFoundError, match=r"train_frcnn\.zip.*'00000000\.json'"):
        data[0]


def test_corpus_joins_lines_wraps_and_truncates(tmp_path, tokenizer):
    first, second = tmp_path / "a.doc", tmp_path / "b.doc"
    first.write_text("one two three\n\nfour five\n")
    second.write_text("six seven eight nine\n")
    data = GeneralCorpusDataset(f"{first}+{second}", tokenizer, seq_len=8, min_seq_len=5, with_mlm_task=False)
    assert len(data) == 3  # the blank line is dropped
    assert data.words(0) == ["one", "two", "three", "four", "five"]
    assert data.words(2) == ["six", "seven", "eight", "nine", "one", "two", "three"]  # wraps to the start
    item = data[2]
    expected = tokenizer.convert_tokens_to_ids(["[CLS]", "six", "seven", "eight", "nine", "one", "two", "[SEP]"])
    assert item["text"].tolist() == expected
    assert torch.all(item["mlm_labels"] == IGNORE_LABEL)
    original = GeneralCorpusDataset(str(first), tokenizer, seq_len=8, min_seq_len=0, with_mlm_task=False,
                                    add_special_tokens=False)
    assert original[0]["text"].tolist() == tokenizer.convert_tokens_to_ids(["one", "two", "three"])
    with pytest.raises(FileNotFoundError, match="missing.doc"):
        GeneralCorpusDataset(f"{first}+{tmp_path}/missing.doc", tokenizer)


def test_coco_captions_boxes_and_one_hot_classes(toy_root, tokenizer):
    coco_root = os.path.join(toy_root, "coco")
    data = COCOCaptionsDataset(coco_root, "val", _builder(tokenizer, with_mvrc_task=False, with_mlm_task=False))
    with open(os.path.join(coco_root, "annotations", "instances_val2017.json")) as f:
        instances = json.load(f)
    with open(os.path.join(coco_root, "annotations", "captions_val2017.json")) as f:
        captions = json.load(f)
    image_id = data.ids[0]
    anns = [a for a in instances["annotations"] if a["image_id"] == image_id]
    item = data[0]
    assert item["image_id"] == image_id
    x, y, w, h = anns[0]["bbox"]
    assert item["boxes"][1].tolist() == [x, y, x + w - 1, y + h - 1]
    assert item["boxes"].shape[0] == len(anns) + 1
    first_caption = next(c["caption"] for c in captions["annotations"] if c["image_id"] == image_id)
    assert item["text"].tolist() == data.builder.text_ids(first_caption.split(" "))[0]
    assert torch.all(item["mvrc_labels"] == 0)  # MVRC off
    category_ids = sorted(c["id"] for c in instances["categories"])
    classes = data.read_raw(0).classes
    assert classes.shape == (len(anns), 81) and np.all(classes.sum(1) == 1)
    assert classes.argmax(1).tolist() == [category_ids.index(a["category_id"]) + 1 for a in anns]


def test_caption_index_holds_the_json_lines(toy_root, tmp_path):
    path = os.path.join(toy_root, "conceptual-captions", "train_frcnn.json")
    with open(path, encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle if line.strip()]
    index = read_caption_index(path)
    assert list(index) == [{k: line[k] for k in ("image", "caption", "frcnn")} for line in lines]
    assert index.caption(3) == lines[3]["caption"]
    broken = tmp_path / "train_frcnn.json"
    broken.write_text(json.dumps(lines[0]) + "\n\n" + json.dumps({**lines[1], "caption": "a b"}) + "\n")
    with pytest.raises(ValueError, match=r"train_frcnn\.json:3: 'caption' must be a list of words"):
        read_caption_index(str(broken))
    broken.write_text(json.dumps({"image": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"train_frcnn\.json:1: missing keys \['caption', 'frcnn'\]"):
        read_caption_index(str(broken))


def test_describe_names_caption_records_and_corpus_lines(toy_root, tokenizer, tmp_path):
    """What the non-finite guard says of an item (the precomputed caption dataset names only the box file)."""
    root = os.path.join(toy_root, "conceptual-captions")
    for precomputed in (True, False):
        data = _cc(toy_root, tokenizer, precomputed=precomputed)
        record = data.records[3]
        files = f"box file {os.path.join(root, folder_path(record['frcnn']))}"
        if not precomputed:
            files = f"image {os.path.join(root, folder_path(record['image']))}, " + files
        assert data.describe(3) == f"{os.path.join(root, 'train_frcnn.json')} record 4 ({files})"
    corpus = tmp_path / "c.doc"
    corpus.write_text("one\n\ntwo\n")
    assert GeneralCorpusDataset(str(corpus), tokenizer).describe(1) == f"text corpus {corpus} non-empty line 2"
    coco = COCOCaptionsDataset(os.path.join(toy_root, "coco"), "val", _builder(tokenizer))
    info = coco.instances.loadImgs(coco.ids[0])[0]
    image = os.path.join(toy_root, "coco", "val2017", info["file_name"])
    assert coco.describe(0) == f"COCO image {coco.ids[0]} ({image})" and os.path.isfile(image)
