"""scripts/time_to_train.py: the FLOPs behind each row, the arithmetic, and the table in cfgs/README.md being the
script's current output."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from common.engine.flops import count_step_flops

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("time_to_train", ROOT / "scripts" / "time_to_train.py")
ttt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ttt)


def test_vqa_base_item_by_hand():
    """Precomputed features: the transformer only. 12 layers, h 768, f 3072, one sequence of L = 24 + 101 + 1:
    12 * (6 * 126 * (4 * 768^2 + 2 * 768 * 3072) + 12 * 126^2 * 768) = 65.97 GFLOP; 5 epochs of 658,111 items at
    0.40 x 769 TFLOP/s."""
    flops = ttt.item_flops("vqa/base_4x16G_fp32.yaml", ttt.VQA)
    assert flops == 12 * (6 * 126 * (4 * 768**2 + 2 * 768 * 3072) + 12 * 126**2 * 768) == pytest.approx(65.97e9,
                                                                                                          rel=1e-4)
    assert ttt.gpu_hours(flops, 658_111, 5, 0.40 * 769e12) == pytest.approx(flops * 658_111 * 5 / 307.6e12 / 3600)


def test_front_end_counted_on_meta_equals_a_real_forward():
    """The meta-device count (shapes only) against the same counter on real CPU tensors: a 32 x 48 image, 1 RoI."""
    cfg = ttt.load("vcr/base_q2a_4x16G_fp32.yaml")
    on_meta = ttt.front_end_flops(cfg, (32, 48), 1)
    from common.model.fast_rcnn import FastRCNN

    net = FastRCNN.from_config(cfg).train()
    real = count_step_flops(net.backbone, lambda: net.backbone(torch.zeros(1, 3, 32, 48)))
    rois = torch.zeros(1, 1024, ttt.ROI_SIZE, ttt.ROI_SIZE, requires_grad=True)
    real += count_step_flops(net.roi_head_feature_extractor, lambda: net.roi_head_feature_extractor(rois))
    assert on_meta == real > 0


def test_cfgs_readme_holds_the_current_table():
    text = (ROOT / "cfgs" / "README.md").read_text()
    block = text.split(ttt.MARK_START + "\n")[1].split("\n" + ttt.MARK_END)[0]
    assert block == ttt.table(ttt.rows()), "cfgs/README.md is stale: python scripts/time_to_train.py"
