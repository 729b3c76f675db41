"""Bad caption data is named, never silently used (docs/GUARANTEES.md): a box file without boxes is logged by name,
boxes outside the image are refused or clamped with a warning naming the file, a SEQ_LEN that does not fit the
position table is refused; image-text matching refuses an image without boxes."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil

import numpy as np
import pytest

from common.config import load_config
from common.data import boxes as box_rules
from common.data.box_files import BoxFileError, encode_array
from common.data.boxes import BoxError
from common.data.captions import ConceptualCaptionsDataset
from common.data.transforms import VisualTransform
from itm.config import add_itm_defaults
from itm.task import build_itm_dataset
from pretrain.config import add_pretrain_defaults
from pretrain.datasets import build_pretrain_datasets
from pretrain.datasets.caption_sample import CaptionSampleBuilder


@pytest.fixture(autouse=True)
def fresh_warnings():
    box_rules._WARNED.clear()


def write_sample(root: str, name: str, boxes: np.ndarray, append: bool = False) -> str:
    """One Conceptual-Captions sample of a 50 x 40 image whose box file holds `boxes`; returns the box file."""
    os.makedirs(os.path.join(root, "train_frcnn"), exist_ok=True)
    path = os.path.join(root, "train_frcnn", f"{name}.json")
    count = len(boxes)
    with open(path, "w") as f:
        json.dump({"image_w": 50, "image_h": 40, "num_boxes": count, "boxes": encode_array(boxes),
                   "classes": encode_array(np.eye(count, 1601, dtype=np.float32)),
                   "features": encode_array(np.ones((count, 2048), np.float32))}, f)
    with open(os.path.join(root, "train_frcnn.json"), "a" if append else "w") as f:
        f.write(json.dumps({"image": f"train_image.zip@/{name}.jpg", "caption": ["a", "red", "cat"],
                            "frcnn": f"train_frcnn.zip@/{name}.json"}) + "\n")
    return path


def captions(root: str, tokenizer) -> ConceptualCaptionsDataset:
    builder = CaptionSampleBuilder(tokenizer, VisualTransform(min_size=120, max_size=200))
    return ConceptualCaptionsDataset(root, "train", builder, precomputed=True, num_classes=1601)


def test_box_file_without_boxes_is_logged_by_name(tmp_path, tokenizer, caplog):
    path = write_sample(str(tmp_path), "00000000", np.zeros((0, 4), np.float32))
    with caplog.at_level(logging.WARNING):
        item = captions(str(tmp_path), tokenizer)[0]
    assert item["boxes"].shape == (1, 4)  # the caption still trains over the whole-image box
    assert f"{path}: no boxes; the caption trains over the whole-image box alone" in caplog.text


def test_boxes_outside_the_image_are_refused_or_clamped_by_name(tmp_path, tokenizer, caplog):
    root = str(tmp_path)
    clamped = write_sample(root, "00000000", np.array([[2, 3, 30, 20], [10, 5, 75, 39]], np.float32))
    outside = write_sample(root, "00000001", np.array([[60, 3, 70, 20]], np.float32), append=True)
    data = captions(root, tokenizer)
    with caplog.at_level(logging.WARNING):
        item = data[0]
    scale = float(item["im_info"][2])
    assert float(item["boxes"][2, 2]) == pytest.approx(49 * scale, abs=1e-3)  # x2 75 -> 49 in a 50-wide image
    assert f"{clamped}: box 1 [10.0, 5.0, 75.0, 39.0]" in caplog.text and "clamped" in caplog.text
    with pytest.raises(BoxError, match=rf"{re.escape(outside)}: box 0 .* wholly outside the image"):
        data[1]


def test_seq_len_beyond_the_position_table_is_refused(toy_root, minilm_dir):
    corpus = os.path.join(toy_root, "en_corpus")
    overrides = ["NETWORK.BERT_MODEL_NAME", minilm_dir,
                 "DATASET.0.DATASET_PATH", os.path.join(toy_root, "conceptual-captions"),
                 "DATASET.1.TRAIN_ANNOTATION_FILE", f"{corpus}/bc1g.doc", "NETWORK.VLBERT.max_position_embeddings",
                 "40"]
    for section in ("0", "1"):  # captions (SEQ_LEN 64) and the text corpus (SEQ_LEN 32 -> 50)
        extra = ["DATASET.1.SEQ_LEN", "50"] if section == "1" else []
        cfg = load_config("cfgs/pretrain/toy_cpu.yaml", overrides + extra, add_task_defaults=add_pretrain_defaults)
        with pytest.raises(ValueError, match=r"DATASET.SEQ_LEN \d+ does not fit NETWORK.VLBERT."
                                             r"max_position_embeddings 40: it must be at most 38"):
            build_pretrain_datasets(cfg, "train")


def test_image_text_matching_refuses_an_image_without_boxes(tmp_path, vocab_only_bert_dir):
    root = str(tmp_path)
    write_sample(root, "00000000", np.array([[2, 3, 30, 20]], np.float32))
    empty = write_sample(root, "00000001", np.zeros((0, 4), np.float32), append=True)
    with open(os.path.join(root, "train_frcnn.json")) as f:
        lines = f.readlines()
    lines[1] = lines[1].replace('"a", "red", "cat"', '"a", "blue", "dog"')  # matching needs two captions
    with open(os.path.join(root, "train_frcnn.json"), "w") as f:
        f.writelines(lines)
    cfg = load_config("cfgs/itm/toy_cpu.yaml", ["DATASET.DATASET_PATH", root, "NETWORK.BERT_MODEL_NAME",
                                                 vocab_only_bert_dir], add_task_defaults=add_itm_defaults)
    dataset = build_itm_dataset(cfg, "train")
    assert dataset[0]["box_features"].shape == (2, 2048)
    with pytest.raises(BoxFileError, match=rf"{re.escape(empty)}: no boxes"):
        dataset[1]


# ---- COCO captions (pretrain/datasets/coco_captions.py): the same box and image rules -------------------------
def coco_copy(toy_root: str, tmp_path, edit_box=None) -> tuple[str, str, dict]:
    """A copy of the toy COCO val2017 captions and instances; `edit_box(bbox, image)` may change the first
    instance box of the first image (in place). Returns (coco root, instances file, that image)."""
    coco = str(tmp_path / "coco")
    os.makedirs(os.path.join(coco, "annotations"))
    for name in ("captions_val2017.json", "instances_val2017.json"):
        shutil.copy(os.path.join(toy_root, "coco", "annotations", name), os.path.join(coco, "annotations", name))
    os.symlink(os.path.join(toy_root, "coco", "val2017"), os.path.join(coco, "val2017"))
    instances_file = os.path.join(coco, "annotations", "instances_val2017.json")
    with open(instances_file) as f:
        instances = json.load(f)
    image = min(instances["images"], key=lambda im: im["id"])
    if edit_box is not None:
        edit_box(next(a["bbox"] for a in instances["annotations"] if a["image_id"] == image["id"]), image)
        with open(instances_file, "w") as f:
            json.dump(instances, f)
    return coco, instances_file, image


def coco_captions(coco: str, tokenizer, **kwargs):
    from pretrain.datasets.coco_captions import COCOCaptionsDataset

    builder = CaptionSampleBuilder(tokenizer, VisualTransform(min_size=120, max_size=200), with_mvrc_task=False)
    return COCOCaptionsDataset(coco, "val", builder, **kwargs)


def test_coco_captions_refuse_a_box_outside_the_image(toy_root, tmp_path, tokenizer):
    """Before, the box was clamped onto the image edge silently."""
    def move_out(bbox, image):
        bbox[0] = image["width"] + 20.0

    coco, instances_file, image = coco_copy(toy_root, tmp_path, move_out)
    data = coco_captions(coco, tokenizer)
    index = data.ids.index(image["id"])
    with pytest.raises(BoxError, match=re.escape(f"{instances_file} (image {image['id']}): box ") + ".*lies wholly "
                       "outside the image"):
        data[index]


def test_coco_captions_clamp_a_box_past_the_edge_with_a_warning(toy_root, tmp_path, tokenizer, caplog):
    def widen(bbox, image):
        bbox[2] = image["width"] - bbox[0] + 10.0  # 10 px past the right edge

    coco, instances_file, image = coco_copy(toy_root, tmp_path, widen)
    data = coco_captions(coco, tokenizer)
    with caplog.at_level(logging.WARNING):
        raw_boxes = data.read_raw(data.ids.index(image["id"])).boxes
        data[data.ids.index(image["id"])]
    assert raw_boxes[:, 2].max() == image["width"] + 9.0  # read unclamped (x + w - 1)
    assert f"{instances_file} (image {image['id']}): box" in caplog.text and "clamped to it" in caplog.text


def test_coco_captions_honour_skip_unreadable_images(toy_root, tmp_path, tokenizer, caplog):
    coco, _, image = coco_copy(toy_root, tmp_path)
    os.remove(os.path.join(coco, "val2017"))
    shutil.copytree(os.path.join(toy_root, "coco", "val2017"), os.path.join(coco, "val2017"))
    broken = os.path.join(coco, "val2017", image["file_name"])
    with open(broken, "r+b") as f:
        f.truncate(100)
    index = coco_captions(coco, tokenizer).ids.index(image["id"])
    with pytest.raises(OSError, match=re.escape(broken)):
        coco_captions(coco, tokenizer)[index]
    with caplog.at_level(logging.WARNING):
        raw = coco_captions(coco, tokenizer, skip_unreadable_images=True).read_raw(index)
    assert raw.image.size == (image["width"], image["height"]) and not np.asarray(raw.image).any()
    assert broken in caplog.text and "DATASET.SKIP_UNREADABLE_IMAGES" in caplog.text


def test_coco_captions_sub_pixel_boxes_are_one_pixel_and_negative_sizes_are_refused():
    from pretrain.datasets.coco_captions import coco_xywh_to_xyxy

    assert coco_xywh_to_xyxy([3, 4, 10, 6]) == [3, 4, 12, 9]  # the original's x + w - 1
    assert coco_xywh_to_xyxy([3, 4, 0.5, 0.25]) == [3, 4, 3, 4]
    assert coco_xywh_to_xyxy([3, 4, -2, 6]) == [3, 4, 1, 9]  # inverted: check_boxes refuses it
    with pytest.raises(BoxError, match="is inverted"):
        box_rules.check_boxes(np.array([coco_xywh_to_xyxy([3, 4, -2, 6])]), 50, 40, "x")
