"""Slow: toy RefCOCO+ with detected boxes pooled from a timm ViT (cfgs/refcoco/toy_cpu_regions_vit.yaml, the toy ViT
of data/toy_vit.py) beats the random-box and largest-box baselines on val, testA and testB (refcoco/test.py)."""
from __future__ import annotations

import glob
import json
import os
import re
import sys

import pytest
from test_refcoco_training import REPO, run

VIT_CFG = os.path.join(REPO, "cfgs", "refcoco", "toy_cpu_regions_vit.yaml")


@pytest.mark.slow
def test_timm_vit_regions_beat_largest_and_random_box(demo_world_root, tmp_path_factory, minilm_dir, toy_vit_weights):
    out = str(tmp_path_factory.mktemp("refcoco_vit"))
    opts = ["DATASET.DATASET_PATH", os.path.join(demo_world_root, "coco"), "NETWORK.BERT_MODEL_NAME", minilm_dir,
            "NETWORK.IMAGE_PRETRAINED", toy_vit_weights]
    run([sys.executable, "refcoco/train_end2end.py", "--cfg", VIT_CFG, "--model-dir", out, *opts], timeout=5400)
    (best,) = glob.glob(os.path.join(out, "**", "*-best.model"), recursive=True)
    with open(os.path.join(demo_world_root, "baselines.json")) as f:
        baselines = json.load(f)["refcoco+"]
    report = {}
    for split in ("val", "testA", "testB"):
        printed = run([sys.executable, "refcoco/test.py", "--cfg", VIT_CFG, "--ckpt", best, "--split", split,
                       "--result-path", out, "--result-name", "vit", *opts], timeout=1800)
        accuracy = float(re.search(rf"RefCOCO\+ {split} accuracy: ([0-9.]+)%", printed).group(1)) / 100
        trivial = baselines[split]["proposals"]
        report[split] = (accuracy, trivial["random_box"], trivial["largest_box"])
    print("RefCOCO+ toy accuracy with the toy ViT vs (random box, largest box):", report)
    for split, (accuracy, random_box, largest_box) in report.items():
        assert accuracy > max(random_box, largest_box) + 0.05, f"{split}: {report[split]}"
