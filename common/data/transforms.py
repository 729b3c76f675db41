"""Image + box preprocessing shared by every task: resize by SCALES, random horizontal flip, Caffe normalisation.

Boxes are x1, y1, x2, y2 in pixels with the inclusive (w - 1) convention; extra box columns (score, class)
travel untouched. Works with image None (precomputed features): boxes are still resized from the original size.
"""
from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

CAFFE_PIXEL_MEANS = (102.9801, 115.9465, 122.7717)


def as_box_tensor(boxes) -> Tensor:
    """numpy / list / tensor [N, C>=4] -> float32 tensor [N, C] (a copy, so callers' arrays are never modified)."""
    if isinstance(boxes, Tensor):
        out = boxes.detach().clone().float()
    else:
        out = torch.tensor(np.asarray(boxes, dtype=np.float32))
    if out.numel() == 0:
        return out.reshape(0, out.shape[-1] if out.dim() == 2 else 4)
    return out.reshape(-1, out.shape[-1])


def resized_size(width: int, height: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Target (width, height): shorter side -> min_size unless the longer side would pass max_size.

    When capped, the shorter side becomes round(max_size * short / long); the longer side is then
    int(short_target * long / short) (truncated), as maskrcnn-benchmark's Resize, which the original used.
    """
    short, long = min(width, height), max(width, height)
    size = min_size
    if max_size is not None and long / short * size > max_size:
        size = int(round(max_size * short / long))
    if short == size:
        return width, height
    if width < height:
        return size, int(size * height / width)
    return int(size * width / height), size


def resize(image: Image.Image | None, boxes, min_size: int, max_size: int,
           image_size: tuple[int, int] | None = None) -> tuple[Image.Image | None, Tensor, Tensor]:
    """Resize image (bilinear) and boxes; returns (image, boxes [N, C], im_info [4] = new_w, new_h, sx, sy).

    `image_size` (w, h) is required when image is None.
    """
    width, height = image.size if image is not None else image_size
    new_w, new_h = resized_size(width, height, min_size, max_size)
    if image is not None and (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    scale_x, scale_y = new_w / width, new_h / height
    boxes = as_box_tensor(boxes)
    boxes[:, [0, 2]] *= scale_x
    boxes[:, [1, 3]] *= scale_y
    return image, boxes, torch.tensor([new_w, new_h, scale_x, scale_y], dtype=torch.float32)


def flip_boxes(boxes, width: float) -> Tensor:
    """x' = width - 1 - x, with x1 and x2 swapped; applying it twice gives the boxes back."""
    boxes = as_box_tensor(boxes)
    x1 = boxes[:, 0].clone()
    boxes[:, 0] = width - 1 - boxes[:, 2]
    boxes[:, 2] = width - 1 - x1
    return boxes


def clamp_boxes(boxes, width: float, height: float) -> Tensor:
    """Clamp x to [0, width - 1] and y to [0, height - 1].

    Readers check boxes first (`common.data.boxes.check_boxes`: broken boxes are errors, far-out ones warned), so
    here it only trims the one pixel of the x2 = x + w convention and rounding after a resize.
    """
    boxes = as_box_tensor(boxes)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clamp(0, width - 1)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clamp(0, height - 1)
    return boxes


def prepend_whole_image_box(boxes, width: float, height: float, extra: Sequence[float] = ()):
    """Put [0, 0, width-1, height-1, *extra] in front of boxes [N, C] (extra columns default to 0).

    Returns the same kind as given (numpy array or tensor).
    """
    is_numpy = not isinstance(boxes, Tensor)
    boxes_t = as_box_tensor(boxes)
    columns = boxes_t.shape[1] if boxes_t.shape[0] else max(boxes_t.shape[1], 4 + len(extra))
    if 4 + len(extra) > columns:
        raise ValueError(f"prepend_whole_image_box: {len(extra)} extra values for boxes with {columns} columns")
    row = torch.zeros(1, columns)
    row[0, :4] = torch.tensor([0.0, 0.0, width - 1, height - 1])
    row[0, 4:4 + len(extra)] = torch.tensor(list(extra), dtype=torch.float32)
    out = torch.cat([row, boxes_t.reshape(-1, columns)], 0)
    return out.numpy() if is_numpy else out


def to_normalized_tensor(image: Image.Image, pixel_means: Sequence[float] = CAFFE_PIXEL_MEANS,
                         pixel_stds: Sequence[float] = (1.0, 1.0, 1.0), to_bgr255: bool = True) -> Tensor:
    """PIL RGB -> [3, H, W] float32; BGR * 255 minus means, divided by stds (Caffe/Detectron convention)."""
    array = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32).copy()).permute(2, 0, 1)
    array = array[[2, 1, 0]] if to_bgr255 else array / 255.0
    mean = torch.tensor(pixel_means, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(pixel_stds, dtype=torch.float32).view(3, 1, 1)
    return (array - mean) / std


def pad_images(images: Sequence[Tensor], min_hw: tuple[int, int] | None = None) -> Tensor:
    """Zero-pad [3, H_i, W_i] images at the bottom/right to the batch max (at least `min_hw`): [B, 3, H, W]."""
    height = max(img.shape[-2] for img in images)
    width = max(img.shape[-1] for img in images)
    if min_hw is not None:
        height, width = max(height, min_hw[0]), max(width, min_hw[1])
    out = images[0].new_zeros(len(images), images[0].shape[0], height, width)
    for i, img in enumerate(images):
        out[i, :, : img.shape[-2], : img.shape[-1]] = img
    return out


_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def _swap_word(word: str) -> str:
    lower = word.lower()
    if lower not in ("left", "right"):
        return word
    swapped = "right" if lower == "left" else "left"
    if word.isupper():
        return swapped.upper()
    return swapped.capitalize() if word[0].isupper() else swapped


def swap_left_right(words_or_text: str | list[str]) -> str | list[str]:
    """Swap the words left <-> right (case kept) in a text or a token list, after a horizontal flip."""
    if isinstance(words_or_text, str):
        return _LEFT_RIGHT.sub(lambda m: _swap_word(m.group(0)), words_or_text)
    return [_swap_word(w) for w in words_or_text]


@dataclass
class VisualTransform:
    """Resize -> random flip -> normalise, on (image or None, boxes, masks); boxes clamped at the end (`clamp_boxes`).

    Call returns a dict: image [3, H, W] (or None), boxes [N, C] float32, masks (flipped along the width
    when the image is), im_info [4] = (w, h, scale_x, scale_y) of the resized image, flipped (bool).
    """

    min_size: int
    max_size: int
    flip_prob: float = 0.0
    pixel_means: Sequence[float] = CAFFE_PIXEL_MEANS
    pixel_stds: Sequence[float] = (1.0, 1.0, 1.0)
    to_bgr255: bool = True

    def __call__(self, image: Image.Image | None, boxes, masks: Tensor | None = None,
                 image_size: tuple[int, int] | None = None, rng: random.Random | None = None) -> dict:
        if image is None and image_size is None:
            raise ValueError("VisualTransform: image_size (w, h) is required when image is None")
        image, boxes, im_info = resize(image, boxes, self.min_size, self.max_size, image_size)
        width, height = float(im_info[0]), float(im_info[1])
        flipped = self.flip_prob > 0 and (rng or random).random() < self.flip_prob
        if flipped:
            boxes = flip_boxes(boxes, width)
            if image is not None:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
            if masks is not None:
                masks = torch.as_tensor(masks).flip(-1)
        tensor = None if image is None else to_normalized_tensor(image, self.pixel_means, self.pixel_stds,
                                                                  self.to_bgr255)
        return {"image": tensor, "boxes": clamp_boxes(boxes, width, height), "masks": masks,
                "im_info": im_info, "flipped": flipped}


def build_transform(cfg, split: str) -> VisualTransform:
    """From cfg.SCALES, cfg.NETWORK.PIXEL_MEANS/PIXEL_STDS and the split's FLIP_PROB (TRAIN / VAL / TEST)."""
    section = {"train": "TRAIN", "val": "VAL", "test": "TEST"}.get(split)
    if section is None:
        raise ValueError(f"build_transform: split must be train, val or test, found {split!r}")
    scales = tuple(cfg.SCALES)
    if len(scales) != 2:
        raise ValueError(f"SCALES must be (shorter side, longer-side cap), e.g. [600, 1000]; found {scales}")
    net = cfg.NETWORK
    means, stds = tuple(net.PIXEL_MEANS), tuple(net.PIXEL_STDS)
    if net.IMAGE_FEAT_PRECOMPUTED:
        means, stds = means or CAFFE_PIXEL_MEANS, stds or (1.0, 1.0, 1.0)
    for key, value in (("NETWORK.PIXEL_MEANS", means), ("NETWORK.PIXEL_STDS", stds)):
        if len(value) != 3:
            raise ValueError(f"{key} must hold 3 values (B, G, R), found {value}")
    return VisualTransform(min_size=int(scales[0]), max_size=int(scales[1]), flip_prob=float(cfg[section].FLIP_PROB),
                           pixel_means=means, pixel_stds=stds)
