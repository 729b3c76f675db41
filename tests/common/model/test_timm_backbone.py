"""TimmBackbone: the stride-16 map equals timm's own forward on the RGB image, weights load from timm's layout and a
file with a missing or misnamed key is refused naming the file and both keys, frozen stages follow timm's groups."""
from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from common.model.backbones import ResNetC4
from common.model.resnet import BasicBlock
from common.model.state_dict_io import CheckpointError
from common.model.timm_backbone import TimmBackbone, parse_backbone_args

TINY_VIT = {"embed_dim": 32, "depth": 2, "num_heads": 2}


def test_backbone_args_are_read_as_yaml_and_bad_entries_name_the_key():
    assert parse_backbone_args(["depth=4", "drop_path_rate=0.1", "global_pool=avg"]) == {
        "depth": 4, "drop_path_rate": 0.1, "global_pool": "avg"}
    with pytest.raises(ValueError, match="NETWORK.BACKBONE_ARGS.*'depth4'"):
        parse_backbone_args(["depth4"])


def test_unknown_model_name_names_the_key():
    with pytest.raises(ValueError, match="NETWORK.BACKBONE 'vit_tiny_patch16_2244'.*vit_tiny_patch16_224"):
        TimmBackbone("vit_tiny_patch16_2244")


def test_map_is_timms_own_stride16_output_on_the_rgb_image(tmp_path):
    torch.manual_seed(0)
    reference = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    path = str(tmp_path / "resnet18.pth")
    torch.save(reference.state_dict(), path)  # a classifier's full file: fc.* and layer4.* are not used
    backbone = TimmBackbone("resnet18", frozen_stages=())
    backbone.load_weights(path)
    backbone.eval()
    assert not any(k.startswith(("trunk.layer4.", "trunk.fc.")) for k in backbone.state_dict())
    bgr = torch.randn(2, 3, 70, 90)
    with torch.no_grad():
        ours = backbone(bgr)
        rgb = torch.nn.functional.pad(bgr.flip(1), (0, 6, 0, 10))  # padded to 80 x 96
        expected = reference.forward_intermediates(rgb, indices=[3], intermediates_only=True)[0]
    assert ours.shape == (2, 256, 5, 6)
    torch.testing.assert_close(ours, expected)


def tiny_vit_file(tmp_path, rename: tuple[str, str] | None = None, drop: str | None = None) -> tuple[str, dict]:
    torch.manual_seed(1)
    state = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, **TINY_VIT).state_dict()
    if rename:
        state[rename[1]] = state.pop(rename[0])
    if drop:
        del state[drop]
    path = str(tmp_path / "vit.pth")
    torch.save(state, path)
    return path, state


def test_vit_weights_load_and_the_class_token_and_patches_are_timms_final_tokens(tmp_path):
    path, state = tiny_vit_file(tmp_path)  # holds head.weight / head.bias of a 5-class classifier
    backbone = TimmBackbone("vit_tiny_patch16_224", TINY_VIT)
    backbone.load_weights(path)
    assert torch.equal(backbone.trunk.pos_embed, state["pos_embed"])
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, dynamic_img_size=True,
                                  **TINY_VIT)
    reference.load_state_dict(state)
    bgr = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        fmap, class_token = backbone.eval().tokens(bgr)
        tokens = reference.eval().forward_features(bgr.flip(1))  # [1, 1 + 12, C], after the final norm
    torch.testing.assert_close(class_token, tokens[:, 0])
    torch.testing.assert_close(fmap.flatten(2).transpose(1, 2), tokens[:, 1:])


def test_a_misnamed_key_is_refused_naming_the_file_and_both_keys(tmp_path):
    path, _ = tiny_vit_file(tmp_path, rename=("blocks.1.attn.qkv.weight", "blocks.1.attn.qkv_weight"))
    backbone = TimmBackbone("vit_tiny_patch16_224", TINY_VIT)
    before = backbone.trunk.blocks[0].attn.qkv.weight.clone()
    with pytest.raises(CheckpointError) as err:
        backbone.load_weights(path)
    message = str(err.value)
    assert path in message and "vit_tiny_patch16_224" in message
    assert "missing keys: [blocks.1.attn.qkv.weight]" in message
    assert "unexpected keys: [blocks.1.attn.qkv_weight]" in message
    assert "expected keys (timm layout)" in message
    assert torch.equal(backbone.trunk.blocks[0].attn.qkv.weight, before)  # nothing half-loaded


def test_a_missing_key_is_refused(tmp_path):
    path, _ = tiny_vit_file(tmp_path, drop="norm.weight")
    with pytest.raises(CheckpointError, match=r"missing keys: \[norm.weight\]; unexpected keys: \[\]"):
        TimmBackbone("vit_tiny_patch16_224", TINY_VIT).load_weights(path)


def test_missing_file_says_nothing_is_downloaded(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*nothing is downloaded"):
        TimmBackbone("vit_tiny_patch16_224", TINY_VIT).load_weights(str(tmp_path / "absent.pth"))


def trainable(module: nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


def test_frozen_stages_are_timms_coarse_groups():
    backbone = TimmBackbone("vit_tiny_patch16_224", TINY_VIT, frozen_stages=[1, 2])
    free = trainable(backbone)
    stem_and_first = ("trunk.patch_embed.", "trunk.blocks.0.", "trunk.cls_token", "trunk.pos_embed")
    assert not any(n.startswith(stem_and_first) for n in free)
    assert "trunk.blocks.1.attn.qkv.weight" in free and "trunk.norm.weight" in free
    with pytest.raises(ValueError, match=r"IMAGE_FROZEN_BACKBONE_STAGES: vit_tiny_patch16_224 has stages 1 \(stem\) "
                                         r"\.\. 3; found \[5\]"):
        TimmBackbone("vit_tiny_patch16_224", TINY_VIT, frozen_stages=[5])
    assert not trainable(TimmBackbone("vit_tiny_patch16_224", TINY_VIT, frozen_stages=[1, 2, 3]))


def test_frozen_bn_keeps_batchnorm_in_eval_and_its_affine_fixed():
    backbone = TimmBackbone("resnet18", frozen_stages=[1], frozen_bn=True).train()
    norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(not m.training for m in norms)
    assert all(not p.requires_grad for m in norms for p in m.parameters())
    assert "trunk.layer3.1.conv2.weight" in trainable(backbone) and "trunk.conv1.weight" not in trainable(backbone)
    loose = TimmBackbone("resnet18", frozen_stages=[], frozen_bn=False).train()
    assert all(m.training for m in loose.modules() if isinstance(m, nn.BatchNorm2d))


def test_stages_are_the_modules_up_to_stride16_in_forward_order():
    vit = TimmBackbone("vit_tiny_patch16_224", TINY_VIT)
    assert vit.stages == list(vit.trunk.blocks)
    cnn = TimmBackbone("convnext_atto")
    assert cnn.stages == list(cnn.trunk.stages)[:3] and cnn.out_channels == 160
    own = {id(p) for p in cnn.parameters()}
    assert all(id(p) in own for stage in cnn.stages for p in stage.parameters())
    assert not any(k.startswith("stages") for k in cnn.state_dict())  # listed, not registered a second time


def test_layer_ids_count_from_the_stem():
    ids = TimmBackbone("vit_tiny_patch16_224", TINY_VIT).lr_layer_ids()
    assert ids["trunk.cls_token"] == (0, 3) and ids["trunk.patch_embed.proj.weight"] == (0, 3)
    assert ids["trunk.blocks.0.mlp.fc1.weight"] == (1, 3) and ids["trunk.blocks.1.mlp.fc1.weight"] == (2, 3)
    assert ids["trunk.norm.weight"] == (2, 3)  # timm groups the final norm with the last block


def test_builtin_resnet_c4_loads_a_torchvision_file_without_layer4(tmp_path):
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    path = str(tmp_path / "r18.pth")
    torch.save(reference.state_dict(), path)
    c4 = ResNetC4(BasicBlock, (2, 2, 2), frozen_stages=[1]).eval()
    c4.load_weights(path)
    image = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        x = reference.maxpool(reference.relu(reference.bn1(reference.conv1(image))))
        expected = reference.layer3(reference.layer2(reference.layer1(x)))
        torch.testing.assert_close(c4(image), expected)
    assert c4.stages == [c4.layer1, c4.layer2, c4.layer3]
    assert c4.lr_layer_ids()["conv1.weight"] == (0, 4) and c4.lr_layer_ids()["layer3.0.conv1.weight"] == (3, 4)


def test_pixel_statistics_are_the_published_ones_in_bgr_on_the_255_scale(caplog):
    import logging

    from common.model.timm_backbone import check_rgb_statistics, pixel_statistics

    resnet = TimmBackbone("resnet18")
    assert pixel_statistics(resnet) == ([103.53, 116.28, 123.675], [57.375, 57.12, 58.395])
    vit = TimmBackbone("vit_tiny_patch16_224", TINY_VIT)
    assert pixel_statistics(vit) == ([127.5] * 3, [127.5] * 3)
    with caplog.at_level(logging.INFO, logger="common.model.timm_backbone"):
        check_rgb_statistics(vit, [127.5] * 3, [127.5] * 3)
        assert "PIXEL_MEANS" not in caplog.text
        check_rgb_statistics(vit, [102.9801, 115.9465, 122.7717], [1.0] * 3)
    assert "expect NETWORK.PIXEL_MEANS [127.5, 127.5, 127.5] and PIXEL_STDS [127.5, 127.5, 127.5]" in caplog.text
