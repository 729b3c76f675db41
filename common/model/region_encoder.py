"""What the box-based front-ends share: per-box raw feature + box geometry (+ class embedding) -> `obj_downsample`
(Dropout, Linear, ReLU) -> `obj_reps`, the MVRC masking of raw features, and `encode(batch)` (the seam's entry).
With NETWORK.STANDARDISE_VISUAL_TOKENS, `obj_reps` are standardised per dimension (`standardise_tokens`).

A subclass supplies `raw_features` (FastRCNN: ResNet + RoIAlign; PrecomputedRegions: the batch's box features).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from common.model.box_geometry import box_geometry_embedding
from common.model.standardise import Standardise
from common.model.visual_frontend import VisualFeatures, trim_to_longest, valid_box_mask

GEOMETRY_DIM = 2048
NUM_OBJECT_CLASSES = 81  # background + 80 COCO classes
SEMANTIC_DIM = 128


def check_image_network_keys(net: Any) -> None:
    """Reject the original options that never worked, naming the key."""
    if net.OUTPUT_CONV5:
        raise ValueError("NETWORK.OUTPUT_CONV5=true is not supported (the original option never worked); "
                         "set it false")


class RegionEncoder(nn.Module):
    """Per-box features [B, N, final_dim] from per-box raw features [K, feature_dim] of the K valid boxes."""

    feature_dim: int

    def add_projection(self, final_dim: int, semantic: bool) -> None:
        """Register `object_embed` and `obj_downsample`; subclasses call it after their own modules, so that the
        parameter order (and with it the optimizer state layout) is the original's."""
        self.object_embed = nn.Embedding(NUM_OBJECT_CLASSES, SEMANTIC_DIM) if semantic else None
        in_dim = GEOMETRY_DIM + self.feature_dim + (SEMANTIC_DIM if semantic else 0)
        self.obj_downsample = nn.Sequential(nn.Dropout(0.1), nn.Linear(in_dim, final_dim), nn.ReLU(inplace=True))
        self.image_norm = self.region_norm = None

    def standardise_tokens(self, whole_image_first: bool) -> None:
        """NETWORK.STANDARDISE_VISUAL_TOKENS: standardise each projected token per dimension (`Standardise`: batch
        statistics in training, running ones at evaluation), the whole-image tokens (box 0 when `whole_image_first`)
        with statistics of their own (`image_norm`), the other boxes with `region_norm`.

        Without it, one component shared by every token (the ReLU projection's mean, the whole-image box's constant
        geometry) dominates `obj_reps`, and the whole-image token, which every text token reads, varies little from
        image to image (docs/VISUAL_FRONTENDS.md). Adds buffers only (no parameters), so the optimizer state layout
        is unchanged; the original configs leave it off."""
        final_dim = self.obj_downsample[1].out_features
        self.image_norm = Standardise(final_dim) if whole_image_first else None
        self.region_norm = Standardise(final_dim)

    def raw_features(self, images: Tensor | None, boxes: Tensor, box_index: Tensor, box_features: Tensor | None,
                     segms: Tensor | None) -> Tensor:
        """[K, feature_dim] raw features of the valid boxes; box_index [K, 2] = (image, box) pairs."""
        raise NotImplementedError

    def regulariser_outputs(self, feats: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
        """Extra outputs computed on the raw features before masking (FastRCNN's object-class regulariser)."""
        return {}

    def load_pretrained_from_config(self, cfg: Any) -> None:
        """No pretrained weights of its own unless a subclass says otherwise."""

    def encode(self, batch: Mapping[str, Any], mask_embedding: Tensor | None = None) -> VisualFeatures:
        """The seam: boxes cut to the longest valid list, then `forward` on what the batch carries."""
        boxes, box_mask, features, classes, segms, ops = trim_to_longest(
            batch["boxes"], valid_box_mask(batch["boxes"]), batch.get("box_features"), batch.get("classes"),
            batch.get("segms"), batch.get("mvrc_ops"))
        out = self(images=batch.get("image"), boxes=boxes, box_mask=box_mask, im_info=batch["im_info"],
                   box_features=features, classes=classes, segms=segms, mvrc_ops=ops,
                   mask_visual_embed=mask_embedding)
        return VisualFeatures(obj_reps=out["obj_reps"], box_mask=box_mask, boxes=boxes,
                              obj_reps_raw=out["obj_reps_raw"],
                              cnn_regularization_loss=out.get("cnn_regularization_loss"))

    def forward(self, images: Tensor | None, boxes: Tensor, box_mask: Tensor, im_info: Tensor,
                box_features: Tensor | None = None, classes: Tensor | None = None, segms: Tensor | None = None,
                mvrc_ops: Tensor | None = None, mask_visual_embed: Tensor | None = None) -> dict[str, Tensor]:
        """Features of every valid box; padding rows of the outputs are zero.

        Args:
            images: [B, 3, H, W] normalised, padded images (None with precomputed features).
            boxes: [B, N, 4] x1, y1, x2, y2 in resized-image pixels; box_mask: [B, N] bool.
            im_info: [B, >=2] resized (unpadded) width, height, ...
            box_features: [B, N, feature_dim] precomputed features (PrecomputedRegions only).
            classes: [B, N] object class ids (needed by IMAGE_SEMANTIC and the CNN regulariser).
            segms: [B, N, 14, 14] instance masks multiplied into the C5 map before pooling (FastRCNN, VCR).
            mvrc_ops: [B, N]; with `mask_visual_embed` [feature_dim], features of boxes with op == 1 are
                replaced by that learned vector (pretraining with MASK_RAW_PIXELS false or precomputed features).
        Returns:
            obj_reps [B, N, final_dim], obj_reps_raw [B, N, feature_dim]; with the regulariser also
            obj_logits [K, 81], obj_labels [K] and cnn_regularization_loss [1] over the K valid boxes.
        """
        box_index = box_mask.nonzero()  # [K, 2], row-major: image-major, then box order
        if box_index.shape[0] == 0:
            raise ValueError(f"{type(self).__name__}: box_mask has no valid box (every sample needs at least the "
                             f"whole-image box)")
        labels = None if classes is None else classes[box_index[:, 0], box_index[:, 1]].long()
        feats = self.raw_features(images, boxes, box_index, box_features, segms)
        outputs = self.regulariser_outputs(feats, labels)
        if mvrc_ops is not None and mask_visual_embed is not None:
            masked = (mvrc_ops[box_index[:, 0], box_index[:, 1]] == 1).unsqueeze(1)
            feats = torch.where(masked, mask_visual_embed.to(feats.dtype).expand_as(feats), feats)
        final = self.project(feats, boxes, im_info, box_index, labels)
        if self.region_norm is not None:
            final = self.standardised(final, box_index)

        batch, num_boxes = box_mask.shape
        where = (box_index[:, 0], box_index[:, 1])
        outputs.update(obj_reps=final.new_zeros(batch, num_boxes, final.shape[-1]).index_put(where, final),
                       obj_reps_raw=feats.new_zeros(batch, num_boxes, feats.shape[-1]).index_put(where, feats))
        return outputs

    def standardised(self, final: Tensor, box_index: Tensor) -> Tensor:
        """[K, final_dim] projected tokens -> the same standardised, whole-image rows and the others apart."""
        whole = box_index[:, 1] == 0
        if self.image_norm is None:
            whole = torch.zeros_like(whole)
        out = torch.empty_like(final)
        for rows, norm in ((whole, self.image_norm), (~whole, self.region_norm)):
            if bool(rows.any()):
                out[rows] = norm(final[rows]).to(final.dtype)
        return out

    def project(self, feats: Tensor, boxes: Tensor, im_info: Tensor, box_index: Tensor,
                labels: Tensor | None) -> Tensor:
        """[K, feature_dim] raw features -> [K, final_dim]: [geometry, feature(, class embedding)] -> obj_downsample."""
        parts = [box_geometry_embedding(boxes[box_index[:, 0], box_index[:, 1]], im_info[box_index[:, 0], :2]),
                 feats]
        if self.object_embed is not None:
            if labels is None:
                raise ValueError(f"{type(self).__name__}: NETWORK.IMAGE_SEMANTIC needs object `classes` in the batch")
            parts.append(self.object_embed(labels))
        dtype = torch.promote_types(feats.dtype, self.obj_downsample[1].weight.dtype)
        return self.obj_downsample(torch.cat([p.to(dtype) for p in parts], dim=-1))
