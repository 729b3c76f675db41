"""Box conventions of the datasets: COCO xywh -> xyxy, IoU with inclusive pixel ends (the "+1" convention), and
`check_boxes`, which every dataset reader applies to the boxes it reads (docs/GUARANTEES.md lists the rules).

The +1 IoU counts a box [x1, y1, x2, y2] as covering (x2 - x1 + 1) x (y2 - y1 + 1) pixels, as the original
RefCOCO+ labels and evaluation did; it is torchvision's IoU of the boxes grown by one pixel at x2 and y2.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

log = logging.getLogger(__name__)


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


# ---- checking boxes read from data files -----------------------------------------------------------------------
# A box may pass the last pixel by up to one: COCO and the original loaders write x2 = x + w (an exclusive end).
EDGE_SLACK = 1.0
_WARNED: set[tuple[str, str]] = set()


class BoxError(ValueError):
    """Box coordinates that cannot be used as they are; the message names the file (or item) and the box."""


def warn_once(source: str, kind: str, message: str) -> None:
    """Log `message` at WARNING the first time (source, kind) is seen in this process (one line per file)."""
    if (source, kind) not in _WARNED:
        _WARNED.add((source, kind))
        log.warning("%s", message)


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def check_boxes(boxes, width: float, height: float, source: str):
    """Check xyxy boxes [N, C >= 4] in the pixels of a `width` x `height` image; return them (same kind as given).

    Refused (BoxError naming `source`, the box index and its values): a NaN/inf coordinate, an inverted box
    (x2 < x1 or y2 < y1), a box wholly outside the image. Clamped to [0, w - 1] x [0, h - 1] with one warning per
    source: a box reaching more than 1 px outside the image. Kept with one warning per source: a zero-size box
    (x1 == x2 or y1 == y2). Up to 1 px outside is the exclusive-end convention and passes unchanged.
    """
    is_tensor = isinstance(boxes, torch.Tensor)
    array = boxes.detach().cpu().numpy() if is_tensor else np.asarray(boxes)
    array = np.array(array, dtype=np.float32).reshape(-1, array.shape[-1] if array.ndim > 1 else 4)
    xy = array[:, :4].astype(np.float64)
    where = f"{source}: box {{}} {{}} (image {width:g} x {height:g})"
    bad = ~np.isfinite(xy).all(1)
    if bad.any():
        i = _first(bad)
        raise BoxError(where.format(i, xy[i].tolist()) + " has a NaN or infinite coordinate")
    inverted = (xy[:, 2] < xy[:, 0]) | (xy[:, 3] < xy[:, 1])
    if inverted.any():
        i = _first(inverted)
        raise BoxError(where.format(i, xy[i].tolist()) + " is inverted (x2 < x1 or y2 < y1): expected x1, y1, x2, y2")
    right, bottom = width - 1 + EDGE_SLACK, height - 1 + EDGE_SLACK
    outside = (xy[:, 0] > right) | (xy[:, 1] > bottom) | (xy[:, 2] < -EDGE_SLACK) | (xy[:, 3] < -EDGE_SLACK)
    if outside.any():
        i = _first(outside)
        raise BoxError(where.format(i, xy[i].tolist()) + " lies wholly outside the image: the boxes and the image "
                       "size disagree")
    beyond = (xy[:, :2] < -EDGE_SLACK).any(1) | (xy[:, 2] > right) | (xy[:, 3] > bottom)
    if beyond.any():
        i = _first(beyond)
        warn_once(source, "clamped", where.format(i, xy[i].tolist()) + f" and {int(beyond.sum()) - 1} more reach "
                  "outside the image; clamped to it")
        array[beyond, 0:4:2] = array[beyond, 0:4:2].clip(0, width - 1)
        array[beyond, 1:4:2] = array[beyond, 1:4:2].clip(0, height - 1)
    flat = (xy[:, 2] == xy[:, 0]) | (xy[:, 3] == xy[:, 1])
    if flat.any():
        i = _first(flat)
        warn_once(source, "zero-size", where.format(i, xy[i].tolist()) + f" and {int(flat.sum()) - 1} more have "
                  "zero width or height; kept (RoIAlign pools at least one pixel)")
    return torch.from_numpy(array) if is_tensor else array
