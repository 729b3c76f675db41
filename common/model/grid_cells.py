"""The grid front-end (NETWORK.VISUAL_TOKENS grid): every cell of the backbone's stride-16 map is a region whose box
is the cell ("In Defense of Grid Features", Jiang et al. 2020); no detector. Region 0 is the whole image (the mean
of its cells); then the image's cells row by row; cells of the batch padding are masked out.

`cells_as_regions` is shared with the patch front-end (`patch_tokens.py`). The projection is `RegionEncoder`'s.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.model.backbones import build_feature_backbone
from common.model.region_encoder import RegionEncoder, check_image_network_keys
from common.model.timm_backbone import FEATURE_STRIDE
from common.model.visual_frontend import VisualFeatures

BOX_PAD = -2.0  # the boxes' padding value (docs/ARCHITECTURE.md)


def cell_boxes(height: int, width: int, stride: int, im_info: Tensor) -> tuple[Tensor, Tensor]:
    """Boxes [B, h*w, 4] of the cells of an h x w map (row-major, clipped to each image) and their validity [B, h*w]:
    a cell is valid when its top-left pixel lies inside the resized image (im_info [B, >=2] = width, height)."""
    ys, xs = torch.meshgrid(torch.arange(height, device=im_info.device), torch.arange(width, device=im_info.device),
                            indexing="ij")
    batch = im_info.shape[0]
    x1 = (xs.reshape(1, -1) * stride).float().expand(batch, -1)
    y1 = (ys.reshape(1, -1) * stride).float().expand(batch, -1)
    img_w, img_h = im_info[:, :1].float(), im_info[:, 1:2].float()
    boxes = torch.stack([x1, y1, torch.minimum(x1 + stride, img_w) - 1, torch.minimum(y1 + stride, img_h) - 1], -1)
    valid = (x1 < img_w) & (y1 < img_h)
    return boxes, valid


def cells_as_regions(fmap: Tensor, im_info: Tensor, stride: int,
                     whole_image: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """A map [B, C, h, w] -> (features [B, N, C], boxes [B, N, 4], box_mask [B, N]) with region 0 the whole image.

    Region 0's feature is `whole_image` [B, C] (a ViT's class token) or else the mean of the image's valid cells;
    then come the valid cells in row-major order; N = 1 + the most valid cells of an image in the batch; padding
    rows have feature 0 and box -2.
    """
    batch, channels, height, width = fmap.shape
    cells = fmap.flatten(2).transpose(1, 2)  # [B, h*w, C]
    boxes, valid = cell_boxes(height, width, stride, im_info)
    counts = valid.sum(1)
    if whole_image is None:
        whole_image = (cells * valid.unsqueeze(-1)).sum(1) / counts.clamp(min=1).unsqueeze(-1).to(cells.dtype)
    slots = int(counts.max()) + 1
    position = valid.long().cumsum(1)  # slot of each valid cell (slot 0 is the whole image)
    rows, cols = valid.nonzero(as_tuple=True)
    where = (rows, position[rows, cols])
    feats = cells.new_zeros(batch, slots, channels).index_put(where, cells[rows, cols])
    feats[:, 0] = whole_image.to(feats.dtype)
    out_boxes = boxes.new_full((batch, slots, 4), BOX_PAD).index_put(where, boxes[rows, cols])
    out_boxes[:, 0] = torch.stack([torch.zeros_like(im_info[:, 0]), torch.zeros_like(im_info[:, 0]),
                                   im_info[:, 0] - 1, im_info[:, 1] - 1], dim=-1).float()
    box_mask = torch.arange(slots, device=fmap.device).unsqueeze(0) <= counts.unsqueeze(1)
    return feats, out_boxes, box_mask


class CellRegions(RegionEncoder):
    """What the grid and patch front-ends share: a backbone whose features are computed per cell in `encode`, then
    the box projection."""

    def __init__(self, backbone: nn.Module, final_dim: int):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = backbone.out_channels
        self.add_projection(final_dim, semantic=False)

    def raw_features(self, images: Tensor | None, boxes: Tensor, box_index: Tensor, box_features: Tensor | None,
                     segms: Tensor | None) -> Tensor:
        return box_features[box_index[:, 0], box_index[:, 1]]

    def cell_features(self, images: Tensor) -> tuple[Tensor, Tensor | None, int]:
        """(map [B, C, h, w], whole-image feature [B, C] or None, stride of a cell in pixels)."""
        raise NotImplementedError

    def encode(self, batch: Mapping[str, Any], mask_embedding: Tensor | None = None) -> VisualFeatures:
        """Reads `image` and `im_info`; the batch's detected boxes and their `mvrc_ops` do not apply to cells."""
        images = batch.get("image")
        if images is None:
            raise ValueError(f"{type(self).__name__}: the batch has no image (NETWORK.IMAGE_FEAT_PRECOMPUTED must be "
                             f"false for NETWORK.VISUAL_TOKENS grid or patches)")
        fmap, whole, stride = self.cell_features(images)
        feats, boxes, box_mask = cells_as_regions(fmap, batch["im_info"], stride, whole)
        out = self(images=None, boxes=boxes, box_mask=box_mask, im_info=batch["im_info"], box_features=feats)
        return VisualFeatures(obj_reps=out["obj_reps"], box_mask=box_mask, boxes=boxes,
                              obj_reps_raw=out["obj_reps_raw"])

    def lr_layer_ids(self) -> dict[str, tuple[int, int]]:
        """The backbone's layers (TRAIN.VISUAL_LR_DECAY); the projection trains at the full LR."""
        return {f"backbone.{k}": v for k, v in self.backbone.lr_layer_ids().items()}

    @property
    def stages(self) -> list[nn.Module]:
        return list(self.backbone.stages)

    def load_pretrained_from_config(self, cfg: Any) -> None:
        self.backbone.load_pretrained_from_config(cfg)


def check_cell_keys(net: Any) -> None:
    """Options that need detected boxes (their class labels) do not apply to cells; refuse them by key."""
    check_image_network_keys(net)
    regulariser = bool(net.ENABLE_CNN_REG_LOSS) and not net.get("CNN_LOSS_TOP", False)  # FastRCNN's rule
    for key, on in (("IMAGE_SEMANTIC", bool(net.IMAGE_SEMANTIC)), ("ENABLE_CNN_REG_LOSS", regulariser)):
        if on:
            raise ValueError(f"NETWORK.{key} true needs the detected boxes' classes; NETWORK.VISUAL_TOKENS "
                             f"{net.VISUAL_TOKENS!r} has none: set NETWORK.{key} false")


class GridCells(CellRegions):
    """Per-cell features [B, N, final_dim] from images [B, 3, H, W]; N = 1 + cells (pooled GRID_POOL x GRID_POOL)."""

    def __init__(self, backbone: nn.Module, final_dim: int = 768, pool: int = 1):
        if int(pool) < 1:
            raise ValueError(f"NETWORK.GRID_POOL must be >= 1, found {pool}")
        super().__init__(backbone, final_dim)
        self.pool = int(pool)

    @classmethod
    def from_config(cls, cfg: Any) -> GridCells:
        """NETWORK.BACKBONE (+ its keys), IMAGE_FINAL_DIM, GRID_POOL."""
        net = cfg.NETWORK
        check_cell_keys(net)
        return cls(build_feature_backbone(cfg), final_dim=net.IMAGE_FINAL_DIM, pool=net.GRID_POOL)

    def cell_features(self, images: Tensor) -> tuple[Tensor, Tensor | None, int]:
        fmap = self.backbone(images)
        if self.pool > 1:  # ceil_mode: the last row/column of cells keeps the image's edge
            fmap = F.avg_pool2d(fmap, self.pool, ceil_mode=True)
        return fmap, None, FEATURE_STRIDE * self.pool
