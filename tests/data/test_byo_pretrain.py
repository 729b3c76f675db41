"""Bring your own images, end to end on CPU, as PREPARE_DATA.md ("Your own images") lists it: 5 toy images and a
5-line CSV -> data/extract_boxes.py (a randomly initialised 91-class COCO-shaped detector from a local file) ->
data/captions_to_pretrain.py -> one pre-training epoch through ./scripts/nondist_run.sh on a tiny VL-BERT.
A detector whose class count disagrees with NETWORK.VLBERT.visual_region_classes stops training with an error
naming the key and the box file."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from common.config import load_config
from common.data.box_files import BoxFileError, read_box_file
from common.data.preflight import PreflightError
from common.engine.dist import DistEnv
from common.engine.trainer import fit
from pretrain.datasets import build_section_dataset
from pretrain.task import TASK

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = "cfgs/pretrain/toy_cpu.yaml"
DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"
COCO_CLASSES = 91  # torchvision's COCO detectors: background + 90 category slots
NUM_PAIRS = 5
CHECKPOINT = os.path.join("output", "toy", "pretrain", "toy_cpu", "train_train", "vl-bert_toy_pretrain_multitask")


def run(args: list[str], timeout: int = 300) -> str:
    """Run a command from the repository root with one thread; fail the test with its output when it fails."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{output[-4000:]}"
    return output


def user_overrides(captions: str, corpus: str) -> list[str]:
    """What PREPARE_DATA.md tells a user to override in the toy config for their own captions."""
    return ["DATASET.0.DATASET_PATH", captions, "DATASET.1.TRAIN_ANNOTATION_FILE", corpus,
            "NETWORK.IMAGE_FEAT_PRECOMPUTED", "false", "NETWORK.VLBERT.visual_region_classes", str(COCO_CLASSES),
            "VAL_FREQUENT", "0", "TRAIN.END_EPOCH", "1"]


def tiny_overrides(bert_dir: str) -> list[str]:
    """A tiny randomly initialised VL-BERT (BERT's vocabulary, no weights), small images, one caption per step."""
    return ["NETWORK.BERT_MODEL_NAME", bert_dir, "NETWORK.VLBERT.hidden_size", "32", "NETWORK.VLBERT.visual_size", "32",
            "NETWORK.IMAGE_FINAL_DIM", "32", "NETWORK.VLBERT.num_hidden_layers", "2",
            "NETWORK.VLBERT.num_attention_heads", "2", "NETWORK.VLBERT.intermediate_size", "64", "SCALES", "[64, 96]",
            "TRAIN.BATCH_IMAGES", "[1, 1]", "TRAIN.WARMUP_STEPS", "2", "LOG_FREQUENT", "1"]


@pytest.fixture(scope="module")
def byo(tmp_path_factory, vocab_only_bert_dir) -> dict:
    """The user's files (photos/, pairs.csv, a text file, detector weights) and the two preparation steps run."""
    from torchvision.models import detection

    from data.shape_world.generate import generate

    root = tmp_path_factory.mktemp("byo")
    world = root / "toy_world"
    generate(str(world), seed=0, size="small")
    cc = world / "conceptual-captions"
    with open(cc / "train.json", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle][:NUM_PAIRS]
    photos = root / "photos"
    photos.mkdir()
    lines = ["image,caption"]
    for i, record in enumerate(records):
        shutil.copyfile(cc / record["image"].replace(".zip@", ""), photos / f"photo{i}.jpg")
        lines.append(f'photos/photo{i}.jpg,"{" ".join(record["caption"])}"')  # captions hold commas: quoted
    (root / "pairs.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "my_text.txt").write_text("a red ball lies next to a small green kite .\n"
                                      "two people stand beside a large blue car .\n", encoding="utf-8")
    torch.manual_seed(0)
    detector = getattr(detection, DETECTOR)(weights=None, weights_backbone=None, num_classes=COCO_CLASSES)
    torch.save(detector.state_dict(), root / "detector.pth")

    extract = run([sys.executable, "data/extract_boxes.py", "--images", str(photos), "--out", str(root / "my_boxes"),
                   "--detector", DETECTOR, "--weights", str(root / "detector.pth"), "--device", "cpu",
                   "--workers", "0", "--min-size", "64", "--max-size", "128"])
    convert = run([sys.executable, "data/captions_to_pretrain.py", "--input", str(root / "pairs.csv"),
                   "--boxes-dir", str(root / "my_boxes"), "--out", str(root / "my-captions")])
    return {"root": root, "captions": str(root / "my-captions"), "corpus": str(root / "my_text.txt"),
            "bert": vocab_only_bert_dir, "extract_log": extract, "convert_log": convert}


def test_boxes_and_layout(byo):
    root = byo["root"]
    assert "box files: 5 written, 0 skipped (already done), 0 failed" in byo["extract_log"]
    assert f"visual_region_classes = {COCO_CLASSES}" in byo["extract_log"]
    for i in range(NUM_PAIRS):
        record = read_box_file(str(root / "my_boxes" / f"photo{i}.json"), feature_dim=None)
        assert record["num_boxes"] >= 1 and record["classes"].shape == (record["num_boxes"], COCO_CLASSES)
    assert "5 pairs written, 0 rows skipped" in byo["convert_log"]
    with open(os.path.join(byo["captions"], "train_frcnn.json"), encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle]
    assert len(lines) == NUM_PAIRS and "," in lines[0]["caption"]


def test_one_epoch_of_pretraining(byo, tmp_path):
    out = str(tmp_path / "run")
    overrides = user_overrides(byo["captions"], byo["corpus"]) + tiny_overrides(byo["bert"])
    log = run(["./scripts/nondist_run.sh", "pretrain/train_end2end.py", CFG, out, *overrides])

    prefix = os.path.join(out, CHECKPOINT)
    assert os.path.isfile(f"{prefix}-0000.model") and not os.path.exists(f"{prefix}-0001.model"), os.listdir(
        os.path.dirname(prefix))
    ckpt = torch.load(f"{prefix}-0000.model", map_location="cpu", weights_only=True)
    assert {"state_dict", "optimizer", "scheduler", "train_state", "validation_monitor", "config"} <= set(ckpt)
    cfg = load_config(CFG, overrides, add_task_defaults=TASK.add_defaults)
    expected = {k: tuple(v.shape) for k, v in TASK.build_module(cfg).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ckpt["state_dict"].items()} == expected
    assert expected["vlbert.mvrc_head.region_cls_pred.weight"] == (COCO_CLASSES, 32)
    assert "vlbert.mlm_head.predictions.decoder.weight" in expected and "aux_text_visual_embedding.weight" in expected
    assert ckpt["config"]["NETWORK"]["VLBERT"]["visual_region_classes"] == COCO_CLASSES

    # one caption per step (BATCH_IMAGES [1, 1]) and one log line per step: 5 steps = the 5 pairs, each seen once
    assert ckpt["train_state"]["epoch"] == 1 and ckpt["train_state"]["global_step"] == NUM_PAIRS
    assert [int(b) for b in re.findall(r"Epoch\[0\] Batch \[(\d+)\]", log)] == list(range(NUM_PAIRS))
    summary = re.search(r"Epoch\[0\] Train: (.*)", log)
    assert summary, log[-3000:]
    losses = {k: float(v) for k, v in re.findall(r"Train-(\w+)=(\S+)", summary.group(1))}
    for key in ("MLMLossWVC", "MLMLossAUX", "MVRCLoss"):
        assert key in losses and math.isfinite(losses[key]), losses
    assert losses["MVRCLoss"] > 0  # masked regions met the 91-class head


def test_class_count_mismatch_names_key_and_box_file(byo, tmp_path):
    """The toy config's Visual Genome count (1601) against the COCO detector's box files."""
    overrides = user_overrides(byo["captions"], byo["corpus"]) + tiny_overrides(byo["bert"])
    cfg = load_config(CFG, overrides + ["NETWORK.VLBERT.visual_region_classes", "1601",
                                        "OUTPUT_PATH", str(tmp_path / "out")], add_task_defaults=TASK.add_defaults)
    with pytest.raises(PreflightError) as err:
        fit(TASK, cfg, DistEnv(), "toy_cpu")
    message = str(err.value)
    assert "NETWORK.VLBERT.visual_region_classes is 1601" in message and f"has {COCO_CLASSES} columns" in message
    assert re.search(r"my-captions/train_frcnn/\d{8}\.json", message), message
    assert not os.path.exists(tmp_path / "out")  # stopped before anything was built or written

    dataset = build_section_dataset(cfg, cfg.DATASET[0], "train")  # every sample is checked, not only preflight's
    with pytest.raises(BoxFileError, match=r"train_frcnn/00000004\.json.*NETWORK\.VLBERT\.visual_region_classes"):
        dataset[4]


def test_prepare_data_lists_the_commands():
    """PREPARE_DATA.md shows the command sequence this test runs, with every user-facing override."""
    with open(os.path.join(REPO, "PREPARE_DATA.md"), encoding="utf-8") as handle:
        doc = handle.read()
    for command in ("python data/extract_boxes.py", "python data/captions_to_pretrain.py",
                    f"./scripts/nondist_run.sh pretrain/train_end2end.py {CFG}"):
        assert command in doc, command
    keys = user_overrides("x", "y")[::2]
    for key in keys:
        assert key in doc, key
