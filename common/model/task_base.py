"""Plumbing every task module shares: the visual front-end, object embeddings, text grounding and the VL-BERT call,
and the one build path (`from_config`: construct, load pretrained parts, apply the machine-specific module swaps).

A task module subclasses `VLBertTaskModule`, so the attribute names (and therefore checkpoint keys) are the
original's: `image_feature_extractor.*`, `object_linguistic_embeddings.*`, `vlbert.*`; the subclass adds its
head (`final_mlp.*`, `cnn_loss_reg.*`, ...) and loss.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from common.model.front_ends import build_visual_front_end, check_task_allows
from common.model.onednn_linear import swap_linear_modules
from common.model.pretrained import load_bert_into_vlbert, resolve_bert_path
from common.model.visual_frontend import VisualFeatures
from common.model.vlbert import VisualLinguisticBert

log = logging.getLogger(__name__)


def gather_by_tags(obj_reps: Tensor, tags: Tensor) -> Tensor:
    """Per-token visual feature: obj_reps[b, max(tag, 0)] for tags [B, T] (tag 0 = the whole-image box).

    obj_reps [B, N, D] -> [B, T, D]. Negative tags (padding) read box 0, as the original's clamp did.
    """
    index = tags.clamp(min=0).long().unsqueeze(-1).expand(-1, -1, obj_reps.shape[-1])
    return torch.gather(obj_reps, 1, index)


class VLBertTaskModule(nn.Module):
    """Builds the visual front-end, the object linguistic embedding and VL-BERT from cfg."""

    vlbert_class: type[nn.Module] = VisualLinguisticBert

    def __init__(self, cfg, vlbert_kwargs: dict | None = None, num_object_word_embeddings: int = 1):
        super().__init__()
        net = cfg.NETWORK
        self.cfg = cfg
        check_task_allows(cfg, type(self).needs_regions(cfg))
        self.image_feature_extractor = build_visual_front_end(cfg)
        self.object_linguistic_embeddings = nn.Embedding(num_object_word_embeddings, net.VLBERT.hidden_size)
        self.vlbert = self.vlbert_class(net.VLBERT, **(vlbert_kwargs or {}))
        self.vlbert.encoder.gradient_checkpointing = bool(net.GRADIENT_CHECKPOINTING)
        nn.init.normal_(self.object_linguistic_embeddings.weight, std=net.VLBERT.initializer_range)

    # ---- building -------------------------------------------------------------------------------------------
    @classmethod
    def needs_regions(cls, cfg: Any) -> str | None:
        """Why this task's labels need detected boxes (so NETWORK.VISUAL_TOKENS grid / patches cannot serve it), or
        None when any visual tokens do. VCR, RefCOCO+ and pre-training with MVRC say why."""
        return None

    @classmethod
    def from_config(cls, cfg: Any, load_pretrained: bool = True) -> VLBertTaskModule:
        """The module a run uses: `build(cfg)`, then (unless a checkpoint will replace every weight anyway)
        `load_pretrained_parts()`, then the module swaps the config asks for (NETWORK.CPU_ONEDNN_LINEAR)."""
        module = cls.build(cfg)
        if load_pretrained:
            module.load_pretrained_parts()
        if cfg.NETWORK.CPU_ONEDNN_LINEAR:
            swapped = swap_linear_modules(module)
            log.info("NETWORK.CPU_ONEDNN_LINEAR: %d nn.Linear modules run float32 CPU matmuls in oneDNN", swapped)
        return module

    @classmethod
    def build(cls, cfg: Any) -> VLBertTaskModule:
        """Construct with fresh weights; a task whose constructor needs more than cfg overrides this."""
        return cls(cfg)

    def load_pretrained_parts(self) -> None:
        """Load BERT into VL-BERT and the front-end's own weights (the ResNet), as the original `init_weight` did."""
        bert_path = resolve_bert_path(self.cfg.NETWORK)
        if bert_path is not None:
            load_bert_into_vlbert(self.vlbert, bert_path)
        self.image_feature_extractor.load_pretrained_from_config(self.cfg)

    # ---- forward pieces -------------------------------------------------------------------------------------
    def encode_regions(self, batch: dict, mask_embedding: Tensor | None = None) -> VisualFeatures:
        """The visual front-end on the batch: obj_reps [B, N, D], box_mask [B, N], boxes [B, N, 4], ..."""
        return self.image_feature_extractor.encode(batch, mask_embedding)

    def object_inputs(self, obj_reps: Tensor, linguistic: Tensor | None = None) -> Tensor:
        """[visual || linguistic] per object: [B, N, D + H]; the shared learned word vector by default (mode 2)."""
        if linguistic is None:
            linguistic = self.object_linguistic_embeddings.weight[0].expand(*obj_reps.shape[:2], -1)
        return torch.cat([obj_reps, linguistic.to(obj_reps.dtype)], dim=-1)
