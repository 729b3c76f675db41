"""The visual front-end seam: what every task module asks of the image side (`VisualFrontEnd.encode(batch)`), and
the value it gets back (`VisualFeatures`). Implementations are listed by name in `common/model/front_ends.py`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@dataclass
class VisualFeatures:
    """One batch through a visual front-end. N = the longest valid box (or region) list in the batch."""

    obj_reps: Tensor  # [B, N, D] object representations fed to VL-BERT (D = IMAGE_FINAL_DIM); padding rows are 0
    box_mask: Tensor  # [B, N] bool, True for real regions (region 0 is the whole image)
    boxes: Tensor  # [B, N, 4] x1, y1, x2, y2 of the regions in resized-image pixels
    obj_reps_raw: Tensor | None = None  # [B, N, feature_dim] features before the projection
    cnn_regularization_loss: Tensor | None = None  # [1] object-class loss on the raw features (VCR's regulariser)

    def per_box(self, values: Tensor | None) -> Tensor | None:
        """Cut a per-box batch tensor [B, N_padded, ...] (classes, mvrc_ops, ...) to this batch's N regions."""
        return None if values is None else values[:, : self.box_mask.shape[1]]


@runtime_checkable
class VisualFrontEnd(Protocol):
    """Batch dict in, VisualFeatures out. An nn.Module held by every task module as `image_feature_extractor`.

    `encode` reads what it needs from the batch (`image`, `boxes`, `im_info`, `box_features`, `classes`, `segms`,
    `mvrc_ops`; see docs/ARCHITECTURE.md); `mask_embedding` [feature_dim] replaces the raw features of the
    regions whose `mvrc_ops` is 1 (pre-training's masked regions) when given.
    """

    feature_dim: int  # size of a region's raw feature (obj_reps_raw, the MVRC mask vector)

    def encode(self, batch: Mapping[str, Any], mask_embedding: Tensor | None = None) -> VisualFeatures: ...

    def load_pretrained_from_config(self, cfg: Any) -> None:
        """Load the front-end's own pretrained weights named by the config (nothing to load is fine)."""


def valid_box_mask(boxes: Tensor) -> Tensor:
    """[B, N, 4] boxes padded with -2 (the original's convention) -> [B, N] bool."""
    return boxes[..., 0] > -1.5


def trim_to_longest(batch_boxes: Tensor, box_mask: Tensor, *others: Tensor | None) -> tuple:
    """Cut the box dimension to the longest valid box list in the batch (the original did this before FastRCNN)."""
    longest = max(int(box_mask.sum(1).max()), 1)
    trimmed = [batch_boxes[:, :longest], box_mask[:, :longest]]
    trimmed += [None if t is None else t[:, :longest] for t in others]
    return tuple(trimmed)
