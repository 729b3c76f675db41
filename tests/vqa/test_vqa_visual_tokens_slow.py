"""Slow: toy VQA trained from the minilm BERT with each visual front-end on images (cfgs/vqa/toy_cpu_*.yaml) beats the
best text-only baseline of the demo-size toy world on val by at least 5 points, at its last epoch (README figures)."""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from vqa_fixtures import REPO, data_overrides

CONFIGS = {  # mode -> (config, the toy weights fixture it reads as NETWORK.IMAGE_PRETRAINED)
    "regions_resnet": ("toy_cpu_regions_resnet.yaml", "toy_backbone_weights"),
    "regions_vit": ("toy_cpu_regions_vit.yaml", "toy_vit_weights"),
    "grid": ("toy_cpu_grid.yaml", "toy_backbone_weights"),
    "patches": ("toy_cpu_patches.yaml", "toy_vit_weights"),
}
# a guard against a hung run, not a speed check: `patches` (108 tokens an image) takes 75-100 minutes at one thread
TIMEOUT_S = 4 * 3600


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(CONFIGS))
def test_front_end_beats_the_text_only_baseline(mode, demo_world_root, minilm_dir, tmp_path, request):
    config, weights = CONFIGS[mode]
    cfg = os.path.join(REPO, "cfgs", "vqa", config)
    cmd = ["./scripts/nondist_run.sh", "vqa/train_end2end.py", cfg, str(tmp_path / mode),
           *data_overrides(demo_world_root), "NETWORK.BERT_MODEL_NAME", minilm_dir,
           "NETWORK.IMAGE_PRETRAINED", request.getfixturevalue(weights)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    accuracies = [float(v) for v in re.findall(r"Val-SoftAcc=([0-9.]+)", output)]
    with open(os.path.join(demo_world_root, "baselines.json")) as f:
        val = json.load(f)["vqa"]["val2014"]
    text_only = max(val["text_only_per_question"], val["text_only_per_template"])
    print(f"VQA toy val SoftAcc per epoch, {mode}: {accuracies} (text-only {text_only:.3f})")
    assert accuracies and accuracies[-1] > text_only + 0.05, (mode, accuracies, text_only)
