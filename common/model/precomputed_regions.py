"""The precomputed-feature front-end: bottom-up box features read from the box files come with the batch
(`box_features` [B, N, 2048]); no CNN runs. Keys: `obj_downsample.1.*` (and `object_embed.*`), as the original's
FastRCNN in precomputed mode, so checkpoints of either front-end share the projection's keys.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor

from common.model.region_encoder import RegionEncoder, check_image_network_keys

BOTTOM_UP_FEATURE_DIM = 2048  # the ResNet-101 Faster R-CNN (Visual Genome) features of the box files


class PrecomputedRegions(RegionEncoder):
    """Per-box features [B, N, final_dim] from precomputed features [B, N, feature_dim] and boxes [B, N, 4]."""

    def __init__(self, final_dim: int = 768, semantic: bool = False, feature_dim: int = BOTTOM_UP_FEATURE_DIM):
        super().__init__()
        self.feature_dim = feature_dim
        self.add_projection(final_dim, semantic)

    @classmethod
    def from_config(cls, cfg: Any) -> PrecomputedRegions:
        """Build from NETWORK.IMAGE_FINAL_DIM and IMAGE_SEMANTIC (the CNN keys do not apply; no regulariser)."""
        net = cfg.NETWORK
        check_image_network_keys(net)
        return cls(final_dim=net.IMAGE_FINAL_DIM, semantic=net.IMAGE_SEMANTIC)

    def raw_features(self, images: Tensor | None, boxes: Tensor, box_index: Tensor, box_features: Tensor | None,
                     segms: Tensor | None) -> Tensor:
        """The batch's features of the valid boxes, [K, feature_dim] (`images` and `segms` are not read)."""
        if box_features is None or box_features.shape[-1] != self.feature_dim:
            found = None if box_features is None else tuple(box_features.shape)
            raise ValueError(f"PrecomputedRegions (IMAGE_FEAT_PRECOMPUTED): expected box_features [B, N, "
                             f"{self.feature_dim}], found {found}")
        return box_features[box_index[:, 0], box_index[:, 1]]
