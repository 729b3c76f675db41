"""data/extract_boxes.py with a tiny randomly initialised torchvision detector saved to a local file: box files for
readable images (checked against torchvision's own forward), resumption, unreadable images named, missing weights,
and the optional FastRCNN features against an independent FastRCNN forward."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import detection

from common.data.box_files import read_box_file
from common.model.state_dict_io import CheckpointError
from data import extract_boxes

DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"
NUM_CLASSES = 5
SIZES = [(56, 40), (48, 48), (64, 36)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("extract")
    torch.manual_seed(0)
    model = detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                            num_classes=NUM_CLASSES)
    torch.save(model.state_dict(), root / "detector.pth")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(SIZES):
        pixels = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        pixels[h // 4: h // 2, w // 4: w // 2] = (255, 0, 0)
        Image.fromarray(pixels).save(images / f"img{i}.jpg", quality=95)
    (images / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (images / "notes.txt").write_text("not an image")
    return str(root)


def run(workdir: str, out: str, *extra: str):
    return extract_boxes.main(["--images", os.path.join(workdir, "images"), "--out", out, "--detector", DETECTOR,
                               "--weights", os.path.join(workdir, "detector.pth"), "--min-size", "64",
                               "--max-size", "96", "--workers", "0", "--device", "cpu", "--min-boxes", "3",
                               "--max-boxes", "8", *extra])


def test_box_files_written_skipped_and_failed(workdir, tmp_path, caplog):
    out = str(tmp_path / "boxes")
    with caplog.at_level(logging.WARNING):
        first = run(workdir, out)
    good = [os.path.join(workdir, "images", f"img{i}.jpg") for i in range(3)]
    broken = os.path.join(workdir, "images", "broken.jpg")
    assert sorted(first.written) == good and first.failed == [broken] and first.skipped == []
    assert "broken.jpg" in caplog.text

    for i, (w, h) in enumerate(SIZES):
        record = read_box_file(os.path.join(out, f"img{i}.json"), feature_dim=None)
        assert (record["image_w"], record["image_h"]) == (w, h)
        assert 3 <= record["num_boxes"] <= 8
        assert record["classes"].shape == (record["num_boxes"], NUM_CLASSES)
        np.testing.assert_allclose(record["classes"].sum(1), 1.0, atol=1e-5)  # a softmax over all classes
        boxes = record["boxes"]
        assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()
        assert boxes.min() >= 0 and (boxes[:, 2] <= w - 1).all() and (boxes[:, 3] <= h - 1).all()
        scores = record["classes"][:, 1:].max(1)
        assert (np.diff(scores) <= 1e-6).all()  # sorted by foreground score

    mtimes = {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in os.listdir(out)}
    second = run(workdir, out)
    assert second.written == [] and sorted(second.skipped) == good and second.failed == [broken]
    assert {name: os.stat(os.path.join(out, name)).st_mtime_ns for name in os.listdir(out)} == mtimes

    with open(os.path.join(out, "img1.json"), "w") as handle:  # a truncated file is computed again
        handle.write('{"boxes": "AAAA')
    third = run(workdir, out)
    assert third.written == [good[1]] and len(third.skipped) == 2
    assert read_box_file(os.path.join(out, "img1.json"))["num_boxes"] >= 3


def test_boxes_match_torchvision_forward(tmp_path):
    """With one foreground class, torchvision's own postprocessing keeps one box per proposal too, so with no
    score threshold and no cap its output must equal ours (boxes, scores, order)."""
    torch.manual_seed(2)
    model = detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=2)
    torch.save(model.state_dict(), tmp_path / "two_class.pth")
    model = extract_boxes.build_detector(DETECTOR, str(tmp_path / "two_class.pth"), 64, 96)
    image = torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(3))
    ours = extract_boxes.detect(model, [image], max_boxes=100000, min_boxes=0, min_score=0.0)[0]
    model.roi_heads.score_thresh, model.roi_heads.detections_per_img = 0.0, 100000
    with torch.no_grad():
        ref = model([image])[0]
    ref_boxes = ref["boxes"].clone()
    ref_boxes[:, 0::2] = ref_boxes[:, 0::2].clamp(0, 55)
    ref_boxes[:, 1::2] = ref_boxes[:, 1::2].clamp(0, 39)
    assert len(ref_boxes) > 3
    torch.testing.assert_close(ours["boxes"], ref_boxes)
    torch.testing.assert_close(ours["classes"][:, 1], ref["scores"])
    torch.testing.assert_close(ours["classes"].sum(1), torch.ones(len(ref_boxes)))


def test_missing_weights_names_file_and_source(workdir, tmp_path):
    missing = str(tmp_path / "model" / "fasterrcnn_resnet50_fpn_v2_coco.pth")
    with pytest.raises(CheckpointError) as err:
        extract_boxes.build_detector("fasterrcnn_resnet50_fpn_v2", missing)
    message = str(err.value)
    assert missing in message and "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1" in message
    assert "fasterrcnn_resnet50_fpn_v2_coco" in message and "save the file as" in message
    with pytest.raises(SystemExit):  # the command line turns it into an error exit, nothing written
        extract_boxes.main(["--images", os.path.join(workdir, "images"), "--out", str(tmp_path / "o"),
                            "--weights", missing])
    assert not os.path.exists(tmp_path / "o" / "img0.json")


def test_default_weights_path():
    args = extract_boxes.parse_args(["--images", "x", "--out", "y"])
    assert args.weights == os.path.join("model", "pretrained_model", "fasterrcnn_resnet50_fpn_v2_coco.pth")


def test_list_file_and_duplicate_stems(workdir, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# my images\n{os.path.join(workdir, 'images', 'img0.jpg')}\n\nsub/img0.png\n")
    paths = extract_boxes.list_images(str(listing))
    assert paths[0].endswith("img0.jpg") and paths[1] == os.path.join(str(tmp_path), "sub/img0.png")
    with pytest.raises(ValueError, match="share the file stem 'img0'"):
        extract_boxes.check_unique_stems(paths)


def test_with_features_match_fastrcnn(workdir, tmp_path):
    """Stored features = obj_reps_raw of an independent FastRCNN forward on the same resized image and boxes."""
    from common.config import load_config
    from common.data.transforms import VisualTransform
    from common.model.fast_rcnn import FastRCNN
    from pretrain.config import add_pretrain_defaults

    cfg_path = tmp_path / "feat.yaml"
    cfg_path.write_text("SCALES: [64, 96]\nNETWORK:\n  IMAGE_NUM_LAYERS: 18\n  IMAGE_PRETRAINED: ''\n")
    cfg = load_config(str(cfg_path), add_task_defaults=add_pretrain_defaults)
    torch.manual_seed(1)
    reference = FastRCNN.from_config(cfg, enable_cnn_reg_loss=False).eval()
    state = {"module.image_feature_extractor." + k: v for k, v in reference.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "task.model")
    out = str(tmp_path / "boxes")
    # one image per batch: padding to a batch-wide canvas changes border activations (BN shifts the zeros)
    run(workdir, out, "--with-features", "--cfg", str(cfg_path), "--ckpt", str(tmp_path / "task.model"),
        "--batch-size", "1")

    record = read_box_file(os.path.join(out, "img0.json"), feature_dim=512)
    image = Image.open(os.path.join(workdir, "images", "img0.jpg")).convert("RGB")
    boxes = np.concatenate([[[0, 0, image.width - 1, image.height - 1]], record["boxes"]])
    sample = VisualTransform(64, 96)(image, boxes)
    with torch.no_grad():
        ref = reference(sample["image"][None], sample["boxes"][None], torch.ones(1, len(boxes), dtype=torch.bool),
                        sample["im_info"][None])["obj_reps_raw"][0]
    torch.testing.assert_close(torch.from_numpy(record["features"]), ref[1:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.from_numpy(record["image_box_feature"]), ref[0], atol=1e-4, rtol=1e-4)


def test_exit_status_is_1_when_an_image_failed(workdir, tmp_path):
    """Scripts test the exit code: every readable image is still written, then the run exits 1."""
    import shutil
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    good_only = tmp_path / "good"
    good_only.mkdir()
    shutil.copy(os.path.join(workdir, "images", "img0.jpg"), good_only / "img0.jpg")
    codes = {}
    for name, images in (("mixed", os.path.join(workdir, "images")), ("good", str(good_only))):
        out = tmp_path / f"out_{name}"
        done = subprocess.run([sys.executable, os.path.join(repo, "data", "extract_boxes.py"), "--images", images,
                               "--out", str(out), "--detector", DETECTOR, "--weights",
                               os.path.join(workdir, "detector.pth"), "--min-size", "64", "--max-size", "96",
                               "--workers", "0", "--device", "cpu"], capture_output=True, text=True, timeout=300)
        codes[name] = done.returncode
        assert "failed" in done.stdout, done.stderr[-2000:]
        assert (out / "img0.json").is_file()
    assert codes == {"mixed": 1, "good": 0}
