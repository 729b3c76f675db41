"""Slow end-to-end checks: toy training with detected boxes, on the toy ResNet-18 and on a timm ViT
(cfgs/refcoco/toy_cpu_regions_vit.yaml), beats the trivial baselines of the toy world on val, testA and testB (scored by
refcoco/test.py), and two-process CPU training finishes twice in a row without a hang."""
from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOY_CFG = os.path.join(REPO, "cfgs", "refcoco", "toy_cpu.yaml")
VIT_CFG = os.path.join(REPO, "cfgs", "refcoco", "toy_cpu_regions_vit.yaml")
FAST = ["NETWORK.IMAGE_C5_DILATED", "false", "NETWORK.IMAGE_FROZEN_BACKBONE_STAGES", "[1, 2, 3, 4, 5]"]


def run(cmd: list[str], timeout: int) -> str:
    proc = subprocess.run(cmd, cwd=REPO, timeout=timeout, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{output[-4000:]}"
    return output


def train_and_score(cfg: str, opts: list[str], out: str, name: str, world_root: str) -> dict:
    """Train `cfg` with `opts` into `out`, score its best checkpoint with refcoco/test.py on val, testA and testB.
    Returns {split: (accuracy, random-box accuracy, largest-box accuracy)} against the toy world's baselines.json."""
    run([sys.executable, "refcoco/train_end2end.py", "--cfg", cfg, "--model-dir", out, *opts], timeout=5400)
    (best,) = glob.glob(os.path.join(out, "**", "*-best.model"), recursive=True)
    with open(os.path.join(world_root, "baselines.json")) as f:
        baselines = json.load(f)["refcoco+"]
    report = {}
    for split in ("val", "testA", "testB"):
        printed = run([sys.executable, "refcoco/test.py", "--cfg", cfg, "--ckpt", best, "--split", split,
                       "--result-path", out, "--result-name", name, *opts], timeout=1800)
        accuracy = float(re.search(rf"RefCOCO\+ {split} accuracy: ([0-9.]+)%", printed).group(1)) / 100
        with open(os.path.join(out, f"{name}_refcoco+_{split}.json")) as f:
            assert len(json.load(f)) == baselines[split]["num_expressions"], f"{name} {split}"
        trivial = baselines[split]["proposals"]
        report[split] = (accuracy, trivial["random_box"], trivial["largest_box"])
    return report


# backbone -> (config, the toy weights fixture it reads as NETWORK.IMAGE_PRETRAINED, margin over the better baseline)
BACKBONES = {
    "resnet": (TOY_CFG, "toy_backbone_weights", 0.10),  # the original end-to-end ResNet (toy ResNet-18)
    "vit": (VIT_CFG, "toy_vit_weights", 0.05),  # boxes pooled from a timm ViT (toy ViT of data/toy_vit.py)
}


@pytest.mark.slow
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_toy_training_beats_largest_and_random_box(backbone, demo_world_root, tmp_path_factory, minilm_dir, request):
    cfg, weights, margin = BACKBONES[backbone]
    out = str(tmp_path_factory.mktemp(f"refcoco_{backbone}"))
    opts = ["DATASET.DATASET_PATH", os.path.join(demo_world_root, "coco"), "NETWORK.BERT_MODEL_NAME", minilm_dir,
            "NETWORK.IMAGE_PRETRAINED", request.getfixturevalue(weights)]
    report = train_and_score(cfg, opts, out, backbone, demo_world_root)
    print(f"RefCOCO+ toy accuracy, {backbone}, vs (random box, largest box):", report)
    for split, (accuracy, random_box, largest_box) in report.items():
        assert accuracy > max(random_box, largest_box) + margin, f"{backbone} {split}: {report[split]}"


@pytest.mark.slow
def test_two_process_training_completes_twice(tiny_opts, tmp_path):
    out = str(tmp_path / "dist")
    # AUTO_RESUME off: the second attempt trains again in the same folder instead of finding the run finished
    cmd = ["./scripts/dist_run_single.sh", "2", "refcoco/train_end2end.py", TOY_CFG, out, *tiny_opts, *FAST,
           "TRAIN.END_EPOCH", "1", "TRAIN.BATCH_IMAGES", "3", "VAL.BATCH_IMAGES", "5", "TRAIN.AUTO_RESUME", "false"]
    for attempt in range(2):
        output = run(cmd, timeout=1200)  # a hang would end in a timeout error here
        assert "Validation" in output, f"attempt {attempt}: no validation line"
        assert glob.glob(os.path.join(out, "**", "*-0000.model"), recursive=True)
