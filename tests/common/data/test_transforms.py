"""Resize / flip / normalise / pad against hand-worked values and a drawn rectangle."""
import random

import numpy as np
import pytest
import torch
from easydict import EasyDict
from PIL import Image, ImageDraw

from common.data.transforms import (
    VisualTransform,
    build_transform,
    clamp_boxes,
    flip_boxes,
    pad_images,
    prepend_whole_image_box,
    resize,
    resized_size,
    swap_left_right,
    to_normalized_tensor,
)


@pytest.mark.parametrize("size, expected", [
    ((640, 480), (800, 600)),    # shorter side -> 600, longer 800 <= 1000
    ((333, 500), (600, 900)),    # portrait: int(600 * 500 / 333) = 900
    ((1000, 500), (1000, 500)),  # capped: short = round(1000 * 500 / 1000) = 500 = current size -> unchanged
    ((1500, 500), (999, 333)),   # capped: short = round(333.33) = 333, long = int(333 * 1500 / 500) = 999
    ((500, 1501), (333, 999)),   # portrait, long = int(333 * 1501 / 500) = int(999.67) = 999 (truncated)
])
def test_resized_size_hand_worked(size, expected):
    assert resized_size(*size, 600, 1000) == expected


def test_resize_keeps_a_drawn_rectangle_inside_its_box():
    image = Image.new("RGB", (120, 80))
    ImageDraw.Draw(image).rectangle([30, 20, 69, 49], fill=(255, 255, 255))  # inclusive corners
    resized, boxes, im_info = resize(image, np.array([[30, 20, 69, 49, 0.9, 3]], dtype=np.float32), 40, 1000)
    assert resized.size == (60, 40)
    torch.testing.assert_close(im_info, torch.tensor([60.0, 40.0, 0.5, 0.5]))
    torch.testing.assert_close(boxes, torch.tensor([[15.0, 10.0, 34.5, 24.5, 0.9, 3.0]]))  # extra columns untouched
    gray = np.asarray(resized.convert("L")).astype(int)
    x1, y1, x2, y2 = boxes[0, :4].tolist()
    inside = gray[int(y1) + 1:int(y2), int(x1) + 1:int(x2)]
    assert inside.min() > 200
    outside = gray.copy()
    outside[int(y1) - 1:int(y2) + 2, int(x1) - 1:int(x2) + 2] = 0
    assert outside.max() < 30


def test_flip_hand_value_and_flip_twice_is_identity():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 99.0, 9.0]])
    flipped = flip_boxes(boxes, 100)
    torch.testing.assert_close(flipped, torch.tensor([[69.0, 20.0, 89.0, 40.0], [0.0, 0.0, 99.0, 9.0]]))
    torch.testing.assert_close(flip_boxes(flipped, 100), boxes)


def test_transform_flips_image_boxes_masks_together():
    image = Image.new("RGB", (40, 20))
    image.putpixel((0, 0), (255, 0, 0))
    masks = torch.zeros(1, 14, 14)
    masks[0, :, 0] = 1.0
    out = VisualTransform(min_size=20, max_size=100, flip_prob=1.0)(image, [[0, 0, 9, 9]], masks=masks)
    assert out["flipped"] is True
    torch.testing.assert_close(out["boxes"], torch.tensor([[30.0, 0.0, 39.0, 9.0]]))
    assert out["masks"][0, :, 13].sum() == 14 and out["masks"][0, :, 0].sum() == 0
    red_bgr = torch.tensor([0.0, 0.0, 255.0]) - torch.tensor([102.9801, 115.9465, 122.7717])
    torch.testing.assert_close(out["image"][:, 0, 39], red_bgr)
    kept = VisualTransform(min_size=20, max_size=100, flip_prob=0.0)(image, [[0, 0, 9, 9]])
    assert kept["flipped"] is False and torch.equal(kept["boxes"], torch.tensor([[0.0, 0.0, 9.0, 9.0]]))


def test_precomputed_mode_scales_boxes_from_the_original_size():
    out = VisualTransform(min_size=600, max_size=1000)(None, [[0, 0, 319, 239]], image_size=(320, 240))
    assert out["image"] is None
    torch.testing.assert_close(out["im_info"], torch.tensor([800.0, 600.0, 2.5, 2.5]))
    torch.testing.assert_close(out["boxes"], torch.tensor([[0.0, 0.0, 797.5, 597.5]]))
    with pytest.raises(ValueError, match="image_size"):
        VisualTransform(min_size=600, max_size=1000)(None, [[0, 0, 1, 1]])


def test_random_flip_follows_the_given_rng():
    transform = VisualTransform(min_size=10, max_size=100, flip_prob=0.5)
    flags = [transform(None, [[0, 0, 1, 1]], image_size=(10, 10), rng=random.Random(7))["flipped"] for _ in range(3)]
    assert flags == [random.Random(7).random() < 0.5] * 3


def test_normalisation_hand_worked():
    image = Image.new("RGB", (1, 1), (10, 20, 30))
    out = to_normalized_tensor(image, pixel_means=(1.0, 2.0, 3.0), pixel_stds=(2.0, 2.0, 3.0))
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([(30 - 1) / 2, (20 - 2) / 2, (10 - 3) / 3]))


def test_clamp_pad_prepend_and_swap():
    clamped = clamp_boxes(torch.tensor([[-5.0, 3.0, 120.0, 70.0]]), 100, 50)
    torch.testing.assert_close(clamped, torch.tensor([[0.0, 3.0, 99.0, 49.0]]))
    padded = pad_images([torch.ones(3, 2, 4), torch.full((3, 3, 2), 2.0)])
    assert padded.shape == (2, 3, 3, 4)
    assert padded[0, :, 2].abs().sum() == 0 and padded[1, :, :, 2:].abs().sum() == 0 and padded[1, 0, 2, 1] == 2
    assert pad_images([torch.ones(3, 2, 4)], min_hw=(6, 5)).shape == (1, 3, 6, 5)
    boxes = np.array([[1, 2, 3, 4, 0.5, 7]], dtype=np.float32)
    with_image = prepend_whole_image_box(boxes, 40, 30, extra=(1.0, 0))
    assert isinstance(with_image, np.ndarray)
    np.testing.assert_array_equal(with_image, [[0, 0, 39, 29, 1, 0], [1, 2, 3, 4, 0.5, 7]])
    assert torch.equal(prepend_whole_image_box(torch.zeros(0, 4), 10, 5), torch.tensor([[0.0, 0.0, 9.0, 4.0]]))
    assert swap_left_right("Is the left man right of the LEFT cart? leftover") == \
        "Is the right man left of the RIGHT cart? leftover"
    assert swap_left_right(["left", "of", "right"]) == ["right", "of", "left"]


def cfg(scales=(600, 1000)):
    return EasyDict(SCALES=scales, TRAIN=dict(FLIP_PROB=0.5), VAL=dict(FLIP_PROB=0.0), TEST=dict(FLIP_PROB=0.0),
                    NETWORK=dict(PIXEL_MEANS=[102.9801, 115.9465, 122.7717], PIXEL_STDS=[1, 1, 1],
                                 IMAGE_FEAT_PRECOMPUTED=False))


def test_build_transform_reads_the_split_and_checks_keys():
    assert build_transform(cfg(), "train").flip_prob == 0.5
    val = build_transform(cfg(), "val")
    assert (val.flip_prob, val.min_size, val.max_size) == (0.0, 600, 1000)
    with pytest.raises(ValueError, match="SCALES"):
        build_transform(cfg(scales=(600,)), "train")
    bad = cfg()
    bad.NETWORK.PIXEL_MEANS = []
    with pytest.raises(ValueError, match="NETWORK.PIXEL_MEANS"):
        build_transform(bad, "test")
