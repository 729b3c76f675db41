"""Box conventions of the datasets: COCO xywh -> xyxy, and IoU with inclusive pixel ends (the "+1" convention).

The +1 IoU counts a box [x1, y1, x2, y2] as covering (x2 - x1 + 1) x (y2 - y1 + 1) pixels, as the original
RefCOCO+ labels and evaluation did; it is torchvision's IoU of the boxes grown by one pixel at x2 and y2.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou


def xywh_to_xyxy(boxes, plus_one: bool = False) -> Tensor:
    """[N, 4] COCO [x, y, w, h] -> [N, 4] float32 [x1, y1, x2, y2] with x2 = x + w (or x + w - 1 with plus_one)."""
    out = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4).clone()
    shift = 1.0 if plus_one else 0.0
    out[:, 2] = out[:, 0] + out[:, 2] - shift
    out[:, 3] = out[:, 1] + out[:, 3] - shift
    return out


def box_iou_plus_one(boxes_a, boxes_b) -> Tensor:
    """Pairwise IoU [N, M] of xyxy boxes [N, 4] and [M, 4], areas (x2 - x1 + 1)(y2 - y1 + 1), overlap clipped at 0."""
    a = torch.as_tensor(boxes_a, dtype=torch.float64).reshape(-1, 4).clone()
    b = torch.as_tensor(boxes_b, dtype=torch.float64).reshape(-1, 4).clone()
    a[:, 2:] += 1.0
    b[:, 2:] += 1.0
    return box_iou(a, b)


def paired_iou_plus_one(boxes_a, boxes_b) -> Tensor:
    """Row-by-row IoU [N] of xyxy boxes [N, 4] and [N, 4] with the +1 convention (`box_iou_plus_one`'s diagonal)."""
    a = torch.as_tensor(np.asarray(boxes_a, dtype=np.float64)).reshape(-1, 4)
    b = torch.as_tensor(np.asarray(boxes_b, dtype=np.float64)).reshape(-1, 4)
    if a.shape != b.shape:
        raise ValueError(f"paired_iou_plus_one: {len(a)} boxes against {len(b)}")
    width = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0]) + 1).clamp(min=0)
    height = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1]) + 1).clamp(min=0)
    inter = width * height
    area = lambda r: (r[:, 2] - r[:, 0] + 1) * (r[:, 3] - r[:, 1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)
