"""Plumbing every task module shares: RoI features, object embeddings, text grounding and the VL-BERT call.

A task module subclasses `VLBertTaskModule`, so the attribute names (and therefore checkpoint keys) are the
original's: `image_feature_extractor.*`, `object_linguistic_embeddings.*`, `vlbert.*`; the subclass adds its
head (`final_mlp.*`, `cnn_loss_reg.*`, ...) and loss.
"""
from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from common.model.fast_rcnn import FastRCNN
from common.model.pretrained import load_bert_into_vlbert, resolve_bert_path
from common.model.vlbert import VisualLinguisticBert

log = logging.getLogger(__name__)


def valid_box_mask(boxes: Tensor) -> Tensor:
    """[B, N, 4] boxes padded with -2 (the original's convention) -> [B, N] bool."""
    return boxes[..., 0] > -1.5


def trim_to_longest(batch_boxes: Tensor, box_mask: Tensor, *others: Tensor | None) -> tuple:
    """Cut the box dimension to the longest valid box list in the batch (the original did this before FastRCNN)."""
    longest = max(int(box_mask.sum(1).max()), 1)
    trimmed = [batch_boxes[:, :longest], box_mask[:, :longest]]
    trimmed += [None if t is None else t[:, :longest] for t in others]
    return tuple(trimmed)


def gather_by_tags(obj_reps: Tensor, tags: Tensor) -> Tensor:
    """Per-token visual feature: obj_reps[b, max(tag, 0)] for tags [B, T] (tag 0 = the whole-image box).

    obj_reps [B, N, D] -> [B, T, D]. Negative tags (padding) read box 0, as the original's clamp did.
    """
    index = tags.clamp(min=0).long().unsqueeze(-1).expand(-1, -1, obj_reps.shape[-1])
    return torch.gather(obj_reps, 1, index)


class VLBertTaskModule(nn.Module):
    """Builds FastRCNN (or the precomputed-feature path), the object linguistic embedding and VL-BERT from cfg."""

    vlbert_class: type[nn.Module] = VisualLinguisticBert

    def __init__(self, cfg, vlbert_kwargs: dict | None = None, num_object_word_embeddings: int = 1):
        super().__init__()
        net = cfg.NETWORK
        self.cfg = cfg
        self.image_feature_extractor = FastRCNN.from_config(cfg)
        self.object_linguistic_embeddings = nn.Embedding(num_object_word_embeddings, net.VLBERT.hidden_size)
        self.vlbert = self.vlbert_class(net.VLBERT, **(vlbert_kwargs or {}))
        self.vlbert.encoder.gradient_checkpointing = bool(net.get("GRADIENT_CHECKPOINTING", False))
        nn.init.normal_(self.object_linguistic_embeddings.weight, std=net.VLBERT.initializer_range)

    # ---- initialisation -------------------------------------------------------------------------------------
    def load_pretrained_parts(self) -> None:
        """Load BERT into VL-BERT and the ResNet weights into FastRCNN, as the original `init_weight` did."""
        bert_path = resolve_bert_path(self.cfg.NETWORK)
        if bert_path is not None:
            load_bert_into_vlbert(self.vlbert, bert_path)
        self.image_feature_extractor.load_pretrained_from_config(self.cfg)

    # ---- forward pieces -------------------------------------------------------------------------------------
    def encode_regions(self, batch: dict, mvrc_ops: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Run the RoI feature path on the batch.

        Returns obj_reps [B, N, D], box_mask [B, N] (bool) and the trimmed boxes [B, N, 4].
        """
        boxes = batch["boxes"]
        box_mask = valid_box_mask(boxes)
        box_features = batch.get("box_features")
        boxes, box_mask, box_features, mvrc_ops = trim_to_longest(boxes, box_mask, box_features, mvrc_ops)
        out = self.image_feature_extractor(
            images=batch.get("image"),
            boxes=boxes,
            box_mask=box_mask,
            im_info=batch["im_info"],
            box_features=box_features,
            mvrc_ops=mvrc_ops,
        )
        return out["obj_reps"], box_mask, boxes

    def object_inputs(self, obj_reps: Tensor, linguistic: Tensor | None = None) -> Tensor:
        """[visual || linguistic] per object: [B, N, D + H]; the shared learned word vector by default (mode 2)."""
        if linguistic is None:
            linguistic = self.object_linguistic_embeddings.weight[0].expand(*obj_reps.shape[:2], -1)
        return torch.cat([obj_reps, linguistic.to(obj_reps.dtype)], dim=-1)
