"""The patch front-end (NETWORK.VISUAL_TOKENS patches): a ViT's last-layer patch tokens fed to VL-BERT directly, one
object token per 16x16 patch (ViLT / METER style; no detector, no RoI pooling). The class token, when the model has
one, is the whole-image region 0; patches of the batch padding are masked out. Box = the patch's pixels.

A ViLT-style shallow tower is a timm ViT with few (or zero) blocks: NETWORK.BACKBONE_ARGS ["depth=0"].
"""
from __future__ import annotations

from typing import Any

from torch import Tensor

from common.model.grid_cells import CellRegions, check_cell_keys
from common.model.timm_backbone import BUILTIN_RESNET, FEATURE_STRIDE, TimmBackbone


class PatchTokens(CellRegions):
    """Per-patch features [B, N, final_dim] from images [B, 3, H, W]; N = 1 + patches of the largest image."""

    def __init__(self, backbone: TimmBackbone, final_dim: int = 768):
        if not backbone.has_tokens:
            raise ValueError(f"NETWORK.VISUAL_TOKENS patches needs a ViT-style NETWORK.BACKBONE (patch tokens); "
                             f"{backbone.name!r} gives a feature map: use NETWORK.VISUAL_TOKENS grid")
        super().__init__(backbone, final_dim)

    @classmethod
    def from_config(cls, cfg: Any) -> PatchTokens:
        """NETWORK.BACKBONE (a timm ViT) and its keys, IMAGE_FINAL_DIM."""
        net = cfg.NETWORK
        check_cell_keys(net)
        if net.BACKBONE == BUILTIN_RESNET:
            raise ValueError("NETWORK.VISUAL_TOKENS patches needs a timm ViT as NETWORK.BACKBONE (e.g. "
                             "vit_base_patch16_224); the original ResNet has no patch tokens (use grid or regions)")
        return cls(TimmBackbone.from_config(cfg), final_dim=net.IMAGE_FINAL_DIM)

    def cell_features(self, images: Tensor) -> tuple[Tensor, Tensor | None, int]:
        fmap, class_token = self.backbone.tokens(images)
        return fmap, class_token, FEATURE_STRIDE
