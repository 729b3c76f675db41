"""FastRCNN: batched RoI path vs a per-image hand crop, original checkpoint keys, freezing, precomputed mode."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from easydict import EasyDict
from torch import nn
from torchvision.ops import roi_align

from common.model.box_geometry import box_geometry_embedding
from common.model.fast_rcnn import FastRCNN, map_original_fast_rcnn_keys
from common.model.front_ends import build_visual_front_end
from common.model.state_dict_io import CheckpointError, load_state_dict_with_report

# two images with different box counts; -2 rows are padding
BOXES = torch.tensor([[[0.0, 0.0, 95.0, 63.0], [10.0, 12.0, 40.0, 50.0], [-2.0] * 4, [-2.0] * 4],
                      [[0.0, 0.0, 59.0, 47.0], [5.0, 5.0, 30.0, 30.0], [20.0, 8.0, 58.0, 40.0],
                       [3.0, 30.0, 9.0, 47.0]]])
IM_INFO = torch.tensor([[96.0, 64.0, 1.0, 1.0], [60.0, 48.0, 1.0, 1.0]])


def batch_images():
    torch.manual_seed(0)
    images = torch.zeros(2, 3, 64, 96)
    images[0] = torch.randn(3, 64, 96)
    images[1, :, :48, :60] = torch.randn(3, 48, 60)  # second image smaller, zero-padded bottom/right
    return images


def network_cfg(**changes):
    net = dict(IMAGE_NUM_LAYERS=50, IMAGE_C5_DILATED=True, IMAGE_STRIDE_IN_1x1=True, IMAGE_PRETRAINED="",
               IMAGE_PRETRAINED_EPOCH=0, IMAGE_FROZEN_BACKBONE_STAGES=[1, 2], IMAGE_FROZEN_BN=True, IMAGE_FINAL_DIM=16,
               IMAGE_SEMANTIC=False, IMAGE_FEAT_PRECOMPUTED=False, OUTPUT_CONV5=False, ENABLE_CNN_REG_LOSS=False,
               IMAGE_CHANNELS_LAST=False, STANDARDISE_VISUAL_TOKENS=False)
    net.update(changes)
    return EasyDict(NETWORK=net)


def test_batched_roi_features_equal_a_per_image_hand_crop():
    torch.manual_seed(0)
    model = FastRCNN.from_config(network_cfg()).eval()
    images, mask = batch_images(), BOXES[..., 0] > -1.5
    with torch.no_grad():
        out = model(images, BOXES, mask, IM_INFO)
        for b in range(2):
            c4 = model.backbone(images[b:b + 1])  # this image alone
            assert c4.shape[1] == 1024 and c4.shape[-1] == 96 // 16
            for n in range(4):
                if not mask[b, n]:
                    assert out["obj_reps"][b, n].abs().sum() == 0 and out["obj_reps_raw"][b, n].abs().sum() == 0
                    continue
                crop = roi_align(c4, [BOXES[b, n][None]], output_size=14, spatial_scale=1 / 16, sampling_ratio=1)
                raw = model.roi_head_feature_extractor(crop).mean(dim=(2, 3))[0]
                torch.testing.assert_close(out["obj_reps_raw"][b, n], raw, rtol=1e-4, atol=1e-5)
                geometry = box_geometry_embedding(BOXES[b, n], IM_INFO[b, :2])
                linear = model.obj_downsample[1]
                expected = F.relu(linear(torch.cat([geometry, raw])))
                torch.testing.assert_close(out["obj_reps"][b, n], expected, rtol=1e-4, atol=1e-5)


def test_original_fast_rcnn_keys_load_with_nothing_missing_or_unexpected():
    """Key list built from the fact sheet (section 2.9): ResNet-101 C1-C4, dilated C5 head, IMAGE_FINAL_DIM 768."""
    def conv_bn(prefix, out_c, in_c, k):
        keys = {prefix.replace("@", "conv") + ".weight": (out_c, in_c, k, k)}
        for stat in ("weight", "bias", "running_mean", "running_var"):
            keys[prefix.replace("@", "bn") + f".{stat}"] = (out_c,)
        keys[prefix.replace("@", "bn") + ".num_batches_tracked"] = ()
        return keys

    def stage(prefix, in_c, planes, blocks):
        keys = {}
        for i in range(blocks):
            c_in = in_c if i == 0 else planes * 4
            keys |= conv_bn(f"{prefix}{i}.@1", planes, c_in, 1) | conv_bn(f"{prefix}{i}.@2", planes, planes, 3)
            keys |= conv_bn(f"{prefix}{i}.@3", planes * 4, planes, 1)
            if i == 0:
                keys[f"{prefix}0.downsample.0.weight"] = (planes * 4, in_c, 1, 1)
                for stat in ("weight", "bias", "running_mean", "running_var"):
                    keys[f"{prefix}0.downsample.1.{stat}"] = (planes * 4,)
                keys[f"{prefix}0.downsample.1.num_batches_tracked"] = ()
        return keys

    shapes = conv_bn("backbone.@1", 64, 3, 7)
    shapes |= stage("backbone.layer1.", 64, 64, 3) | stage("backbone.layer2.", 256, 128, 4)
    shapes |= stage("backbone.layer3.", 512, 256, 23)
    head = stage("roi_head_feature_extractor.", 1024, 512, 3)
    shapes |= head | {k.replace("roi_head_feature_extractor.", "head.0."): v for k, v in head.items()}
    shapes |= {"obj_downsample.1.weight": (768, 4096), "obj_downsample.1.bias": (768,)}
    assert shapes["roi_head_feature_extractor.0.conv1.weight"] == (512, 1024, 1, 1)
    assert shapes["roi_head_feature_extractor.0.downsample.0.weight"] == (2048, 1024, 1, 1)
    original = {k: torch.zeros(v, dtype=torch.long if k.endswith("tracked") else torch.float32)
                for k, v in shapes.items()}
    original["head.0.1.conv2.weight"] = original["roi_head_feature_extractor.1.conv2.weight"]  # same tensor

    model = FastRCNN(num_layers=101, c5_dilated=True, stride_in_1x1=True, final_dim=768)
    missing, unexpected = load_state_dict_with_report(model, map_original_fast_rcnn_keys(original), "original",
                                                      allow_missing=False, allow_unexpected=False)
    assert missing == [] and unexpected == []
    assert model.roi_head_feature_extractor[1].conv2.dilation == (2, 2)

    with_prefix = {"image_feature_extractor." + k: v for k, v in original.items() if not k.startswith("roi_head")}
    mapped = map_original_fast_rcnn_keys(with_prefix)  # head.0 alone: renamed to the C5 head
    assert "image_feature_extractor.roi_head_feature_extractor.2.bn3.running_var" in mapped
    assert not any(".head.0." in k for k in mapped)


def test_frozen_stages_frozen_bn_and_frozen_c5_after_an_optimizer_step():
    torch.manual_seed(0)
    cfg = network_cfg(IMAGE_NUM_LAYERS=18, IMAGE_FROZEN_BACKBONE_STAGES=[1, 2, 5])
    model = FastRCNN.from_config(cfg)
    model.train()
    assert model.training and not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    images, mask = batch_images(), BOXES[..., 0] > -1.5
    model(images, BOXES, mask, IM_INFO)["obj_reps"].sum().backward()
    opt.step()
    after = model.state_dict()
    for key in before:
        frozen_prefixes = ("backbone.conv1.", "backbone.bn1.", "backbone.layer1.", "roi_head_feature_extractor.")
        frozen = key.startswith(frozen_prefixes) or ".bn" in key or ".downsample.1." in key
        changed = not torch.equal(before[key], after[key])
        if frozen:
            assert not changed, key
        elif key.endswith("conv1.weight") or key.startswith("obj_downsample"):
            assert changed, key


def test_load_backbone_weights_splits_layer4_into_the_roi_head(tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18-pt-test-0000.model"
    torch.save(state, path)
    model = FastRCNN.from_config(network_cfg(IMAGE_NUM_LAYERS=18, IMAGE_C5_DILATED=False))
    model.load_pretrained_from_config(network_cfg(IMAGE_PRETRAINED=str(tmp_path / "resnet18-pt-test")))
    torch.testing.assert_close(model.backbone.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    torch.testing.assert_close(model.roi_head_feature_extractor[0].downsample[0].weight,
                               state["layer4.0.downsample.0.weight"])
    torch.testing.assert_close(model.roi_head_feature_extractor[1].bn2.running_mean, state["layer4.1.bn2.running_mean"])
    with pytest.raises(CheckpointError, match="missing-0000.model"):
        model.load_backbone_weights(str(tmp_path / "missing-0000.model"))
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4.")}, path)
    with pytest.raises(CheckpointError, match="layer4"):
        model.load_backbone_weights(str(path))


def test_precomputed_mode_semantic_and_mvrc_replacement():
    torch.manual_seed(0)
    cfg = network_cfg(IMAGE_FEAT_PRECOMPUTED=True, IMAGE_SEMANTIC=True, ENABLE_CNN_REG_LOSS=True)
    model = build_visual_front_end(cfg).eval()
    assert not hasattr(model, "backbone") and not hasattr(model, "regularizing_predictor")
    assert model.obj_downsample[1].in_features == 2048 + 2048 + 128
    mask = BOXES[..., 0] > -1.5
    features, classes = torch.randn(2, 4, 2048), torch.tensor([[0, 3, 0, 0], [0, 1, 2, 80]])
    mvrc_ops, mask_vector = torch.tensor([[0, 1, 0, 0], [0, 0, 1, 0]]), torch.randn(2048)
    out = model(None, BOXES, mask, IM_INFO, box_features=features, classes=classes, mvrc_ops=mvrc_ops,
                mask_visual_embed=mask_vector)
    raw = out["obj_reps_raw"]
    assert torch.equal(raw[0, 1], mask_vector) and torch.equal(raw[1, 2], mask_vector)
    assert torch.equal(raw[1, 3], features[1, 3]) and raw[0, 2:].abs().sum() == 0
    expected = F.relu(model.obj_downsample[1](torch.cat([box_geometry_embedding(BOXES[1, 3], IM_INFO[1, :2]),
                                                         features[1, 3], model.object_embed.weight[80]])))
    torch.testing.assert_close(out["obj_reps"][1, 3], expected)
    with pytest.raises(ValueError, match="box_features"):
        model(None, BOXES, mask, IM_INFO, classes=classes)


def test_cnn_regulariser_and_mask_pooling():
    torch.manual_seed(0)
    model = FastRCNN.from_config(network_cfg(IMAGE_NUM_LAYERS=18, ENABLE_CNN_REG_LOSS=True)).eval()
    images, mask = batch_images(), BOXES[..., 0] > -1.5
    classes = torch.tensor([[0, 7, -1, -1], [0, 2, 5, 9]])
    segms = torch.ones(2, 4, 14, 14)
    segms[1, 2] = 0.0
    with torch.no_grad():
        plain = model(images, BOXES, mask, IM_INFO, classes=classes)
        masked = model(images, BOXES, mask, IM_INFO, classes=classes, segms=segms)
    assert torch.equal(plain["obj_labels"], torch.tensor([0, 7, 0, 2, 5, 9]))
    valid_raw = plain["obj_reps_raw"][mask]
    logits = model.regularizing_predictor(valid_raw)
    torch.testing.assert_close(plain["cnn_regularization_loss"], F.cross_entropy(logits, plain["obj_labels"])[None])
    torch.testing.assert_close(masked["obj_reps_raw"][0], plain["obj_reps_raw"][0])
    assert masked["obj_reps_raw"][1, 2].abs().sum() == 0
    with pytest.raises(ValueError, match="ENABLE_CNN_REG_LOSS"):
        model(images, BOXES, mask, IM_INFO)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="OUTPUT_CONV5"):
        FastRCNN.from_config(network_cfg(OUTPUT_CONV5=True))
    with pytest.raises(ValueError, match="IMAGE_FROZEN_BACKBONE_STAGES"):
        FastRCNN.from_config(network_cfg(IMAGE_FROZEN_BACKBONE_STAGES=[0, 6]))
