"""Conceptual Captions preparation tools on toy inputs (no network): download list, image check, stored zip,
JSON-lines indexes, and the pretraining dataset reading what they wrote."""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
from PIL import Image

from common.data.box_files import write_box_file
from common.data.captions import ConceptualCaptionsDataset
from common.data.image_io import open_image
from common.data.transforms import VisualTransform
from data.conceptual_captions import check_images, make_download_list, write_annotations, zip_folder
from pretrain.datasets.caption_sample import CaptionSampleBuilder

ROWS = ["a dog runs on the beach\thttp://example.com/a.jpg", "two cats\thttp://example.com/b.jpg",
        "an empty file\thttp://example.com/c.jpg", "a tiny image\thttp://example.com/d.jpg",
        "not an image\thttp://example.com/e.jpg", "a  red ball\thttp://example.com/f.jpg"]


def _layout(root) -> str:
    (root / "train.tsv").write_text("\n".join(ROWS) + "\n")
    images = root / "train_image"
    images.mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(images / "00000000.jpg")
    Image.new("RGB", (30, 40), (10, 200, 10)).save(images / "00000001.jpg")
    (images / "00000002.jpg").write_bytes(b"")
    Image.new("RGB", (9, 40)).save(images / "00000003.jpg")
    (images / "00000004.jpg").write_bytes(b"this is not a jpeg")
    Image.new("RGB", (20, 20), (0, 0, 255)).save(images / "00000005.jpg")
    return str(root)


def test_download_list(tmp_path):
    root = _layout(tmp_path)
    out = os.path.join(root, "list.txt")
    assert make_download_list.make_download_list(os.path.join(root, "train.tsv"), "train_image", out) == 6
    lines = open(out).read().splitlines()
    assert lines[0] == "train_image/00000000.jpg http://example.com/a.jpg"
    assert lines[5] == "train_image/00000005.jpg http://example.com/f.jpg"
    image_dir = os.path.join(root, "train_image")
    make_download_list.main(["--tsv", os.path.join(root, "train.tsv"), "--image-dir", image_dir, "--out", out,
                             "--skip-existing"])
    assert [line.split(" ")[1] for line in open(out).read().splitlines()] == ["http://example.com/c.jpg"]


def test_check_images_keeps_readable_images_of_sane_size(tmp_path):
    root = _layout(tmp_path)
    out = os.path.join(root, "valid.txt")
    check_images.main(["--image-dir", os.path.join(root, "train_image"), "--out", out, "--delete"])
    assert open(out).read().split() == ["00000000.jpg", "00000001.jpg", "00000005.jpg"]
    assert sorted(os.listdir(os.path.join(root, "train_image"))) == ["00000000.jpg", "00000001.jpg", "00000005.jpg"]
    big = os.path.join(root, "big.png")
    Image.new("L", (10001, 12)).save(big)
    assert "outside" in check_images.image_problem(big)


def test_zip_is_stored_with_bare_member_names(tmp_path):
    root = _layout(tmp_path)
    archive = os.path.join(root, "train_image.zip")
    zip_folder.zip_folder(os.path.join(root, "train_image"), archive, ["00000001.jpg", "00000000.jpg"])
    with zipfile.ZipFile(archive) as z:
        assert [(i.filename, i.compress_type) for i in z.infolist()] == [("00000000.jpg", zipfile.ZIP_STORED),
                                                                       ("00000001.jpg", zipfile.ZIP_STORED)]
    from_zip = np.asarray(open_image(archive + "@/00000001.jpg"))
    assert np.array_equal(from_zip, np.asarray(open_image(os.path.join(root, "train_image", "00000001.jpg"))))


def test_annotations_follow_tsv_order_and_feed_the_dataset(tmp_path, tokenizer):
    root = _layout(tmp_path)
    frcnn = os.path.join(root, "train_frcnn")
    for stem in ("00000000", "00000005"):
        write_box_file(os.path.join(frcnn, stem + ".json"), np.array([[1, 1, 8, 8], [2, 2, 15, 15]], np.float32),
                       classes=np.eye(2, 1601, dtype=np.float32), image_w=40, image_h=30)
    valid = {"00000000.jpg", "00000001.jpg", "00000005.jpg"}
    assert write_annotations.write_annotations(os.path.join(root, "train.tsv"), "train", valid, frcnn, root) == (3, 2)
    plain = [json.loads(line) for line in open(os.path.join(root, "train.json"))]
    assert [r["image"] for r in plain] == ["train_image.zip@/00000000.jpg", "train_image.zip@/00000001.jpg",
                                           "train_image.zip@/00000005.jpg"]
    assert plain[2]["caption"] == ["a", "", "red", "ball"]  # split on single spaces, as the original files
    with_boxes = [json.loads(line) for line in open(os.path.join(root, "train_frcnn.json"))]
    assert [r["frcnn"] for r in with_boxes] == ["train_frcnn.zip@/00000000.json", "train_frcnn.zip@/00000005.json"]

    builder = CaptionSampleBuilder(tokenizer, VisualTransform(min_size=30, max_size=60), with_mlm_task=False)
    data = ConceptualCaptionsDataset(root, "train", builder, precomputed=False)
    item = data[0]
    assert item["image"].shape == (3, 30, 40) and item["boxes"].shape == (3, 4)
    assert item["text"].tolist() == tokenizer.convert_tokens_to_ids(
        ["[CLS]", "a", "dog", "runs", "on", "the", "beach", "[SEP]"])
