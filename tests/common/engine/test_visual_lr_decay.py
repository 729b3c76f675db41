"""TRAIN.VISUAL_LR_DECAY: the visual backbone's layers train at LR x d^(L - layer) on top of LR_MULT (hand-computed for
the original ResNet and a timm ViT), 1.0 leaves the groups as before, and the optimizer logs its groups as a table."""
from __future__ import annotations

import logging

import pytest
from easydict import EasyDict
from torch import nn

from common.engine.optim import build_optimizer, build_param_groups, format_param_groups, visual_layer_scales
from common.model.fast_rcnn import FastRCNN


class WithFrontEnd(nn.Module):
    def __init__(self, front_end: nn.Module):
        super().__init__()
        self.image_feature_extractor = front_end
        self.vlbert = nn.Linear(4, 4)


def resnet_module() -> WithFrontEnd:
    return WithFrontEnd(FastRCNN(num_layers=18, c5_dilated=False, final_dim=8, frozen_stages=(1,)))


def lr_by_name(module: nn.Module, groups: list[dict]) -> dict[str, float]:
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    return {n: lr_of[id(p)] for n, p in module.named_parameters() if p.requires_grad}


def test_resnet_layers_decay_from_the_c5_head_down():
    module = resnet_module()
    lrs = lr_by_name(module, build_param_groups(module, 1.0, 0.0, lr_mult=[("roi_head", 2.0)], visual_lr_decay=0.5))
    prefix = "image_feature_extractor."
    assert f"{prefix}backbone.conv1.weight" not in lrs  # stage 1 frozen
    assert lrs[f"{prefix}backbone.layer1.0.conv1.weight"] == 0.5 ** 4
    assert lrs[f"{prefix}backbone.layer3.1.conv2.weight"] == 0.5 ** 2
    assert lrs[f"{prefix}roi_head_feature_extractor.0.conv1.weight"] == 2.0 * 0.5  # LR_MULT x the decay
    assert lrs[f"{prefix}obj_downsample.1.weight"] == 1.0 and lrs["vlbert.weight"] == 1.0


def test_timm_vit_layers_decay_per_block():
    from common.model.timm_backbone import TimmBackbone

    backbone = TimmBackbone("vit_tiny_patch16_224", {"embed_dim": 32, "depth": 2, "num_heads": 2})
    lrs = lr_by_name(backbone, build_param_groups(backbone, 1.0, 0.0, visual_lr_decay=0.8))
    assert lrs["trunk.pos_embed"] == pytest.approx(0.8 ** 3) and lrs["trunk.patch_embed.proj.weight"] == pytest.approx(
        0.8 ** 3)
    assert lrs["trunk.blocks.0.attn.qkv.weight"] == pytest.approx(0.8 ** 2)
    assert lrs["trunk.blocks.1.attn.qkv.weight"] == pytest.approx(0.8) == lrs["trunk.norm.weight"]


def test_decay_one_leaves_the_groups_of_before():
    module = resnet_module()
    plain = build_param_groups(module, 0.1, 0.01, no_decay_norm_bias=True)
    same = build_param_groups(module, 0.1, 0.01, no_decay_norm_bias=True, visual_lr_decay=1.0)
    assert [(g["name"], g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in plain] == \
        [(g["name"], g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in same]
    assert [g["name"] for g in plain] == ["default", "default/no_decay"]


def test_bad_decay_names_the_key_and_no_backbone_means_no_effect(caplog):
    with pytest.raises(ValueError, match="TRAIN.VISUAL_LR_DECAY must be in"):
        visual_layer_scales(resnet_module(), 0.0)
    with caplog.at_level(logging.WARNING):
        assert visual_layer_scales(nn.Linear(2, 2), 0.5) == {}
    assert "no visual backbone" in caplog.text


def test_optimizer_logs_a_table_of_its_groups(caplog):
    cfg = EasyDict(TRAIN=dict(LR=1e-3, BATCH_IMAGES=2, GRAD_ACCUMULATE_STEPS=1, WD=0.01, MOMENTUM=0.9,
                              OPTIMIZER="AdamW", LR_MULT=[], ADAMW_ORIGINAL=True, NO_DECAY_NORM_BIAS=False,
                              VISUAL_LR_DECAY=0.5))
    module = resnet_module()
    with caplog.at_level(logging.INFO, logger="common.engine.optim"):
        optimizer = build_optimizer(cfg, module, world_size=1)
    table = format_param_groups(optimizer.param_groups)
    assert table in caplog.text
    lines = table.splitlines()
    assert lines[0].split() == ["group", "tensors", "params", "lr", "wd"] and len(lines) == 1 + 5
    names = [line.split()[0] for line in lines[1:]]
    assert names == ["default/visual1", "default/visual2", "default/visual3", "default/visual4", "default"]
    row = lines[-1].split()  # the rest of the model: projection + vlbert at the base LR 2e-3
    assert int(row[1]) == 4 and float(row[3]) == pytest.approx(2e-3)
    assert int(row[2].replace(",", "")) == sum(p.numel() for p in optimizer.param_groups[-1]["params"])
