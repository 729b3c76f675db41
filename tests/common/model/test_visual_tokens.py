"""NETWORK.VISUAL_TOKENS: grid cells and patch tokens as regions (hand-worked cells, boxes and masks; features equal the
backbone's map), RoIAlign regions on a timm map, and the config's choice and refusals, each naming its key."""
from __future__ import annotations

import pytest
import torch
from easydict import EasyDict
from torchvision.ops import roi_align

from common.model.box_geometry import box_geometry_embedding
from common.model.fast_rcnn import FastRCNN
from common.model.front_ends import build_visual_front_end, check_task_allows, front_end_name
from common.model.grid_cells import GridCells, cells_as_regions
from common.model.patch_tokens import PatchTokens
from common.model.visual_frontend import VisualFrontEnd

TINY_VIT = ["embed_dim=32", "depth=2", "num_heads=2"]
IM_INFO = torch.tensor([[96.0, 64.0, 1.0, 1.0], [40.0, 48.0, 1.0, 1.0]])  # image 1: 40 x 48 in a 96 x 64 batch
BOXES = torch.full((2, 3, 4), -2.0)
BOXES[0, :3] = torch.tensor([[0.0, 0.0, 95.0, 63.0], [10.0, 12.0, 40.0, 50.0], [50.0, 5.0, 90.0, 30.0]])
BOXES[1, :2] = torch.tensor([[0.0, 0.0, 39.0, 47.0], [5.0, 5.0, 30.0, 30.0]])


def network_cfg(**changes) -> EasyDict:
    net = dict(IMAGE_NUM_LAYERS=18, IMAGE_C5_DILATED=False, IMAGE_STRIDE_IN_1x1=True, IMAGE_PRETRAINED="",
               IMAGE_PRETRAINED_EPOCH=0, IMAGE_FROZEN_BACKBONE_STAGES=[1], IMAGE_FROZEN_BN=True, IMAGE_FINAL_DIM=16,
               IMAGE_SEMANTIC=False, IMAGE_FEAT_PRECOMPUTED=False, OUTPUT_CONV5=False, ENABLE_CNN_REG_LOSS=False,
               IMAGE_CHANNELS_LAST=False, BACKBONE="resnet", BACKBONE_ARGS=[], VISUAL_TOKENS="regions", GRID_POOL=1,
               STANDARDISE_VISUAL_TOKENS=False)
    net.update(changes)
    return EasyDict(NETWORK=net)


def batch() -> dict:
    torch.manual_seed(0)
    images = torch.zeros(2, 3, 64, 96)
    images[0] = torch.randn(3, 64, 96)
    images[1, :, :48, :40] = torch.randn(3, 48, 40)
    return {"image": images, "boxes": BOXES, "im_info": IM_INFO}


def test_cells_as_regions_by_hand():
    fmap = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).view(2, 1, 2, 3)  # 2 x 3 cells of 16 px
    im_info = torch.tensor([[48.0, 32.0], [20.0, 30.0]])  # image 1 covers cells (0,0), (0,1), (1,0), (1,1)
    feats, boxes, mask = cells_as_regions(fmap, im_info, stride=16)
    assert mask.tolist() == [[True] * 7, [True] * 5 + [False] * 2]
    assert feats[0, :, 0].tolist() == [2.5, 0, 1, 2, 3, 4, 5]  # whole image = mean of its cells, then row-major
    assert feats[1, :, 0].tolist() == [(6 + 7 + 9 + 10) / 4, 6, 7, 9, 10, 0, 0]
    assert boxes[1].tolist() == [[0, 0, 19, 29], [0, 0, 15, 15], [16, 0, 19, 15], [0, 16, 15, 29], [16, 16, 19, 29],
                                 [-2] * 4, [-2] * 4]
    assert boxes[0, 6].tolist() == [32, 16, 47, 31]
    whole = torch.tensor([[7.0], [8.0]])
    assert cells_as_regions(fmap, im_info, 16, whole)[0][:, 0, 0].tolist() == [7.0, 8.0]


@pytest.mark.parametrize("backbone", ["resnet", "resnet18", "vit_tiny_patch16_224"])
def test_grid_regions_are_the_cells_of_the_backbone_map(backbone):
    cfg = network_cfg(VISUAL_TOKENS="grid", BACKBONE=backbone, BACKBONE_ARGS=TINY_VIT if "vit" in backbone else [])
    assert front_end_name(cfg) == "grid"
    model = build_visual_front_end(cfg).eval()
    assert isinstance(model, GridCells) and isinstance(model, VisualFrontEnd)
    data = batch()
    with torch.no_grad():
        out = model.encode(data)
        fmap = model.backbone(data["image"])  # [2, C, 4, 6]
    assert fmap.shape[-2:] == (4, 6)
    assert out.box_mask.sum(1).tolist() == [1 + 24, 1 + 9]  # 40 x 48 pixels: 3 x 3 cells
    assert out.obj_reps.shape == (2, 25, 16) and out.obj_reps[1, 10:].abs().sum() == 0
    torch.testing.assert_close(out.obj_reps_raw[0, 1:], fmap[0].flatten(1).t())
    torch.testing.assert_close(out.obj_reps_raw[1, 1:10], fmap[1, :, :3, :3].flatten(1).t())
    torch.testing.assert_close(out.obj_reps_raw[1, 0], fmap[1, :, :3, :3].mean((1, 2)))
    assert out.boxes[1, 9].tolist() == [32, 32, 39, 47]
    # the projection is RegionEncoder's: [geometry, feature] -> obj_downsample
    geometry = box_geometry_embedding(out.boxes[1, :10], IM_INFO[1:, :2].expand(10, 2))
    expected = model.obj_downsample(torch.cat([geometry, out.obj_reps_raw[1, :10]], -1))
    torch.testing.assert_close(out.obj_reps[1, :10], expected)


def test_grid_pool_averages_cells_into_coarser_regions():
    model = build_visual_front_end(network_cfg(VISUAL_TOKENS="grid", BACKBONE="resnet18", GRID_POOL=2)).eval()
    data = batch()
    with torch.no_grad():
        out = model.encode(data)
        fmap = model.backbone(data["image"])
    assert out.box_mask.sum(1).tolist() == [1 + 6, 1 + 4]
    torch.testing.assert_close(out.obj_reps_raw[0, 1], fmap[0, :, :2, :2].mean((1, 2)))
    assert out.boxes[0, 6].tolist() == [64, 32, 95, 63]


def test_patches_are_the_vit_tokens_with_the_class_token_as_the_whole_image():
    cfg = network_cfg(VISUAL_TOKENS="patches", BACKBONE="vit_tiny_patch16_224", BACKBONE_ARGS=TINY_VIT)
    model = build_visual_front_end(cfg).eval()
    assert isinstance(model, PatchTokens)
    data = batch()
    with torch.no_grad():
        out = model.encode(data)
        tokens = model.backbone.trunk.forward_features(data["image"].flip(1))  # [2, 1 + 24, 32], normed
    torch.testing.assert_close(out.obj_reps_raw[0], tokens[0])
    torch.testing.assert_close(out.obj_reps_raw[1, 0], tokens[1, 0])
    torch.testing.assert_close(out.obj_reps_raw[1, 1:4], tokens[1, 1:4])  # first row of patches: 3 inside the image
    assert out.box_mask.sum(1).tolist() == [25, 10]


def test_patches_need_a_vit_and_cells_refuse_detector_class_options():
    with pytest.raises(ValueError, match="NETWORK.VISUAL_TOKENS patches needs a ViT-style NETWORK.BACKBONE.*grid"):
        build_visual_front_end(network_cfg(VISUAL_TOKENS="patches", BACKBONE="resnet18"))
    with pytest.raises(ValueError, match="NETWORK.VISUAL_TOKENS patches needs a timm ViT"):
        build_visual_front_end(network_cfg(VISUAL_TOKENS="patches"))
    with pytest.raises(ValueError, match="NETWORK.IMAGE_SEMANTIC true needs the detected boxes' classes"):
        build_visual_front_end(network_cfg(VISUAL_TOKENS="grid", IMAGE_SEMANTIC=True))
    with pytest.raises(ValueError, match="NETWORK.GRID_POOL must be >= 1"):
        build_visual_front_end(network_cfg(VISUAL_TOKENS="grid", GRID_POOL=0))


def test_config_choice_and_refusals_name_the_keys():
    assert front_end_name(network_cfg()) == "fast_rcnn"
    assert front_end_name(network_cfg(IMAGE_FEAT_PRECOMPUTED=True)) == "precomputed"
    with pytest.raises(ValueError, match="NETWORK.VISUAL_TOKENS must be one of.*'cells'"):
        front_end_name(network_cfg(VISUAL_TOKENS="cells"))
    with pytest.raises(ValueError, match="IMAGE_FEAT_PRECOMPUTED true.*NETWORK.VISUAL_TOKENS 'grid'"):
        front_end_name(network_cfg(IMAGE_FEAT_PRECOMPUTED=True, VISUAL_TOKENS="grid"))
    with pytest.raises(ValueError, match="IMAGE_FEAT_PRECOMPUTED true.*NETWORK.BACKBONE 'resnet18'"):
        front_end_name(network_cfg(IMAGE_FEAT_PRECOMPUTED=True, BACKBONE="resnet18"))
    check_task_allows(network_cfg(VISUAL_TOKENS="grid"), None)
    check_task_allows(network_cfg(), "labels are boxes")
    with pytest.raises(ValueError, match="NETWORK.VISUAL_TOKENS 'patches' cannot serve this task: labels are boxes"):
        check_task_allows(network_cfg(VISUAL_TOKENS="patches"), "labels are boxes")


def test_regions_on_a_timm_map_are_roialign_then_mean_per_box():
    cfg = network_cfg(BACKBONE="vit_tiny_patch16_224", BACKBONE_ARGS=TINY_VIT)
    model = build_visual_front_end(cfg).eval()
    assert isinstance(model, FastRCNN) and model.feature_dim == 32 and model.roi_head_feature_extractor is None
    assert not any("roi_head" in k for k in model.state_dict())
    data = batch()
    with torch.no_grad():
        out = model.encode(data)
        for b in range(2):  # one image at a time, its own map
            fmap = model.backbone(data["image"][b:b + 1])
            valid = data["boxes"][b][data["boxes"][b, :, 0] > -1.5]
            rois = torch.cat([torch.zeros(len(valid), 1), valid], 1)
            pooled = roi_align(fmap, rois, (14, 14), spatial_scale=1 / 16, sampling_ratio=1, aligned=False)
            torch.testing.assert_close(out.obj_reps_raw[b, :len(valid)], pooled.mean((2, 3)), atol=1e-5, rtol=1e-5)
    assert model.stages == list(model.backbone.trunk.blocks)
    assert set(model.lr_layer_ids()) == {f"backbone.{n}" for n, _ in model.backbone.named_parameters()}


def test_builtin_fast_rcnn_lists_its_stages_and_layers():
    model = build_visual_front_end(network_cfg())
    assert model.stages == [model.backbone.layer1, model.backbone.layer2, model.backbone.layer3,
                            model.roi_head_feature_extractor]
    ids = model.lr_layer_ids()
    assert ids["backbone.conv1.weight"] == (0, 5) and ids["backbone.layer2.0.conv1.weight"] == (2, 5)
    assert ids["roi_head_feature_extractor.1.conv2.weight"] == (4, 5)
    assert not any(k.startswith("obj_downsample") for k in ids)
