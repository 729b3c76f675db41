"""Slow: toy RefCOCO+ with detected boxes pooled from a timm ViT (cfgs/refcoco/toy_cpu_regions_vit.yaml, the toy ViT
of data/toy_vit.py) beats the random-box and largest-box baselines on val, testA and testB (refcoco/test.py)."""
from __future__ import annotations

import os

import pytest
from test_refcoco_training import REPO, train_and_score

VIT_CFG = os.path.join(REPO, "cfgs", "refcoco", "toy_cpu_regions_vit.yaml")


@pytest.mark.slow
def test_timm_vit_regions_beat_largest_and_random_box(demo_world_root, tmp_path_factory, minilm_dir, toy_vit_weights):
    out = str(tmp_path_factory.mktemp("refcoco_vit"))
    opts = ["DATASET.DATASET_PATH", os.path.join(demo_world_root, "coco"), "NETWORK.BERT_MODEL_NAME", minilm_dir,
            "NETWORK.IMAGE_PRETRAINED", toy_vit_weights]
    report = train_and_score(VIT_CFG, opts, out, "vit", demo_world_root)
    print("RefCOCO+ toy accuracy with the toy ViT vs (random box, largest box):", report)
    for split, (accuracy, random_box, largest_box) in report.items():
        assert accuracy > max(random_box, largest_box) + 0.05, f"{split}: {report[split]}"
