"""data/toy_backbone.py: labelled crops of toy objects, and a weights file that FastRCNN loads as IMAGE_PRETRAINED."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from common.data.transforms import CAFFE_PIXEL_MEANS
from common.model.fast_rcnn import FastRCNN
from data import toy_backbone
from data.shape_world.vocab import COLOUR_NAMES, COLOURS, SHAPE_NAMES


def test_crop_labels_name_the_colour_at_the_crop_centre():
    images, labels = toy_backbone.crop_batch(np.random.default_rng(3), 40)
    assert images.shape == (40, 3, toy_backbone.CROP, toy_backbone.CROP) and labels.shape == (40, 2)
    assert labels[:, 0].max() < len(SHAPE_NAMES) and labels[:, 1].max() < len(COLOUR_NAMES)
    # undo the preprocessing (BGR 0-255 minus the Caffe means) and read the centre pixel: it is the object's colour
    # for every shape but the person (whose centre may be skin or dark trousers)
    means = torch.tensor(CAFFE_PIXEL_MEANS).view(3, 1, 1)
    checked = 0
    for image, (shape, colour) in zip(images, labels.tolist(), strict=True):
        if SHAPE_NAMES[shape] == "person":
            continue
        half = toy_backbone.CROP // 2
        bgr = (image + means)[:, half - 1:half + 1, half - 1:half + 1].mean((1, 2))
        rgb = bgr.flip(0).numpy()
        nearest = min(COLOUR_NAMES, key=lambda name: float(np.abs(np.array(COLOURS[name]) - rgb).sum()))
        assert nearest == COLOUR_NAMES[colour]
        checked += 1
    assert checked >= 10


def test_written_weights_load_into_the_rcnn_backbone(tmp_path):
    out = str(tmp_path / "resnet18-toy.pth")
    accuracy = toy_backbone.train(out, num_layers=18, steps=2, batch=4, held_out=8)
    assert set(accuracy) == {"shape", "colour"}
    state = torch.load(out, weights_only=True)
    assert "conv1.weight" in state and not any(k.startswith("fc.") for k in state)
    model = FastRCNN(num_layers=18, c5_dilated=False, final_dim=32)
    model.load_backbone_weights(out)
    assert torch.equal(model.backbone.state_dict()["conv1.weight"], state["conv1.weight"])
    assert torch.equal(model.roi_head_feature_extractor.state_dict()["0.conv1.weight"], state["layer4.0.conv1.weight"])


def test_unknown_depth_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--layers 20"):
        toy_backbone.train(str(tmp_path / "w.pth"), num_layers=20, steps=1, batch=2, held_out=2)
