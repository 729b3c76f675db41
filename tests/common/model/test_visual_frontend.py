"""The visual front-end seam: the config picks the implementation in one place, `encode(batch)` routes the batch
keys to the extractor and cuts the boxes to the longest valid list, masked regions get the mask vector, and
FastRCNN keeps the original's parameter order (optimizer states of older checkpoints map onto the same tensors)."""
from __future__ import annotations

import torch
from easydict import EasyDict

from common.model.fast_rcnn import FastRCNN
from common.model.front_ends import VISUAL_FRONT_ENDS, build_visual_front_end, front_end_name
from common.model.precomputed_regions import PrecomputedRegions
from common.model.visual_frontend import VisualFrontEnd

# two images, 4 box columns of which the second image uses all 4, padded (-2) to 6 columns as a collated batch
BOXES = torch.full((2, 6, 4), -2.0)
BOXES[0, :2] = torch.tensor([[0.0, 0.0, 95.0, 63.0], [10.0, 12.0, 40.0, 50.0]])
BOXES[1, :4] = torch.tensor([[0.0, 0.0, 59.0, 47.0], [5.0, 5.0, 30.0, 30.0], [20.0, 8.0, 58.0, 40.0],
                             [3.0, 30.0, 9.0, 47.0]])
IM_INFO = torch.tensor([[96.0, 64.0, 1.0, 1.0], [60.0, 48.0, 1.0, 1.0]])


def network_cfg(**changes) -> EasyDict:
    net = dict(IMAGE_NUM_LAYERS=18, IMAGE_C5_DILATED=True, IMAGE_STRIDE_IN_1x1=True, IMAGE_PRETRAINED="",
               IMAGE_PRETRAINED_EPOCH=0, IMAGE_FROZEN_BACKBONE_STAGES=[1, 2], IMAGE_FROZEN_BN=True, IMAGE_FINAL_DIM=16,
               IMAGE_SEMANTIC=False, IMAGE_FEAT_PRECOMPUTED=False, OUTPUT_CONV5=False, ENABLE_CNN_REG_LOSS=False,
               IMAGE_CHANNELS_LAST=False, STANDARDISE_VISUAL_TOKENS=False)
    net.update(changes)
    return EasyDict(NETWORK=net)


def test_the_config_picks_the_front_end():
    for precomputed, kind in ((True, PrecomputedRegions), (False, FastRCNN)):
        cfg = network_cfg(IMAGE_FEAT_PRECOMPUTED=precomputed)
        assert front_end_name(cfg) in VISUAL_FRONT_ENDS
        front_end = build_visual_front_end(cfg)
        assert type(front_end) is kind and isinstance(front_end, VisualFrontEnd)


def test_encode_routes_the_batch_and_equals_forward_on_the_trimmed_boxes():
    torch.manual_seed(0)
    model = build_visual_front_end(network_cfg(ENABLE_CNN_REG_LOSS=True, IMAGE_SEMANTIC=True)).eval()
    images = torch.randn(2, 3, 64, 96)
    classes = torch.tensor([[0, 7, -1, -1, -1, -1], [0, 2, 5, 9, -1, -1]])
    segms = torch.ones(2, 6, 14, 14)
    segms[1, 2, :7] = 0.0  # a mask that changes the pooled feature of box (1, 2)
    batch = {"image": images, "boxes": BOXES, "im_info": IM_INFO, "classes": classes, "segms": segms,
             "label": torch.tensor([1, 0])}
    with torch.no_grad():
        regions = model.encode(batch)
        expected = model(images, BOXES[:, :4], BOXES[:, :4, 0] > -1.5, IM_INFO, classes=classes[:, :4],
                         segms=segms[:, :4])
        unmasked = model(images, BOXES[:, :4], BOXES[:, :4, 0] > -1.5, IM_INFO, classes=classes[:, :4])
    assert regions.obj_reps.shape == (2, 4, 16) and regions.box_mask.tolist() == [[True] * 2 + [False] * 2,
                                                                                    [True] * 4]
    assert torch.equal(regions.boxes, BOXES[:, :4])
    assert torch.equal(regions.obj_reps, expected["obj_reps"])
    assert torch.equal(regions.obj_reps_raw, expected["obj_reps_raw"])
    assert not torch.equal(regions.obj_reps_raw[1, 2], unmasked["obj_reps_raw"][1, 2])  # segms were read
    assert torch.equal(regions.cnn_regularization_loss, expected["cnn_regularization_loss"])
    assert torch.equal(regions.per_box(classes), classes[:, :4])


def test_mask_embedding_replaces_the_raw_features_of_masked_regions():
    torch.manual_seed(0)
    model = build_visual_front_end(network_cfg(IMAGE_FEAT_PRECOMPUTED=True)).eval()
    features, mask_vector = torch.randn(2, 6, 2048), torch.randn(2048)
    ops = torch.tensor([[0, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0]])
    batch = {"boxes": BOXES, "im_info": IM_INFO, "box_features": features, "mvrc_ops": ops}
    with torch.no_grad():
        plain, masked = model.encode(batch), model.encode(batch, mask_embedding=mask_vector)
    assert torch.equal(plain.obj_reps_raw[1, :4], features[1, :4]) and plain.obj_reps_raw[0, 2:].abs().sum() == 0
    assert torch.equal(masked.obj_reps_raw[0, 1], mask_vector) and torch.equal(masked.obj_reps_raw[1, 2], mask_vector)
    assert torch.equal(masked.obj_reps_raw[1, 3], features[1, 3]) and torch.equal(masked.obj_reps[0, 0],
                                                                                  plain.obj_reps[0, 0])
    assert plain.cnn_regularization_loss is None


def test_fast_rcnn_parameters_keep_the_original_order():
    model = FastRCNN.from_config(network_cfg(ENABLE_CNN_REG_LOSS=True, IMAGE_SEMANTIC=True))
    tops = list(dict.fromkeys(name.split(".")[0] for name, _ in model.named_parameters()))
    assert tops == ["backbone", "roi_head_feature_extractor", "regularizing_predictor", "object_embed",
                    "obj_downsample"]
