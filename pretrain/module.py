"""Pretraining modules: VL-BERT with MLM / MVRC / relationship heads over image captions, the multitask variant
that appends a text-only batch, and the attention-map variant (no heads). Keys follow the original modules."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from common.model.task_base import VLBertTaskModule
from common.model.vlbert import VisualLinguisticBert, VisualLinguisticBertForPretraining
from pretrain.losses import mlm_loss, mvrc_loss, relationship_loss


def _pad_columns(x: Tensor, width: int, value: float) -> Tensor:
    """Pad dim 1 of [B, T, ...] to `width` with `value`."""
    if x.shape[1] >= width:
        return x
    pad = x.new_full((x.shape[0], width - x.shape[1], *x.shape[2:]), value)
    return torch.cat([x, pad], 1)


class ResNetVLBERTForPretraining(VLBertTaskModule):
    """Image-caption pretraining. Batch keys: image (end-to-end) or box_features (precomputed), boxes, im_info,
    text [B, T], mlm_labels [B, T], mvrc_ops [B, N], mvrc_labels [B, N, C], relationship_label [B]."""

    vlbert_class = VisualLinguisticBertForPretraining

    def __init__(self, cfg):
        net = cfg.NETWORK
        super().__init__(cfg, vlbert_kwargs=self.head_flags(cfg))
        self.with_rel, self.with_mlm, self.with_mvrc = (bool(net.WITH_REL_LOSS), bool(net.WITH_MLM_LOSS),
                                                        bool(net.WITH_MVRC_LOSS))
        std = net.VLBERT.initializer_range
        self.object_mask_visual_embedding = None
        if net.IMAGE_FEAT_PRECOMPUTED or not net.MASK_RAW_PIXELS:
            # the feature of a hidden region: a learned vector, zero at the start (as the original)
            self.object_mask_visual_embedding = nn.Embedding(1, self.image_feature_extractor.feature_dim)
            nn.init.zeros_(self.object_mask_visual_embedding.weight)
        self.object_mask_word_embedding = None
        if self.with_mvrc:
            self.object_mask_word_embedding = nn.Embedding(1, net.VLBERT.hidden_size)
            nn.init.normal_(self.object_mask_word_embedding.weight, std=std)

    @classmethod
    def needs_regions(cls, cfg) -> str | None:
        """MVRC predicts each detected box's class; with grid cells or patches pre-training is MLM + relationship."""
        if cfg.NETWORK.WITH_MVRC_LOSS:
            return "NETWORK.WITH_MVRC_LOSS true classifies the detected boxes (set it false for grid or patches)"
        return None

    @classmethod
    def head_flags(cls, cfg) -> dict:
        net = cfg.NETWORK
        return {"with_rel_head": bool(net.WITH_REL_LOSS), "with_mlm_head": bool(net.WITH_MLM_LOSS),
                "with_mvrc_head": bool(net.WITH_MVRC_LOSS)}

    # ---- inputs ---------------------------------------------------------------------------------------------
    def caption_inputs(self, batch: dict) -> dict[str, Tensor]:
        """VL-BERT inputs of the image-caption rows: every text token sees the whole-image box (tag 0), segment 0."""
        mask_visual = self.object_mask_visual_embedding
        regions = self.encode_regions(batch, mask_embedding=None if mask_visual is None else mask_visual.weight[0])
        obj_reps, ops = regions.obj_reps, regions.per_box(batch.get("mvrc_ops"))
        linguistic = self.object_linguistic_embeddings.weight[0].expand(*obj_reps.shape[:2], -1)
        if self.object_mask_word_embedding is not None and ops is not None:
            hidden = (ops == 1).unsqueeze(-1)
            mask_word = self.object_mask_word_embedding.weight[0].expand_as(linguistic)
            linguistic = torch.where(hidden, mask_word, linguistic)
        text = batch["text"]
        return {"text_ids": text, "token_types": torch.zeros_like(text),
                "text_visual": obj_reps[:, :1].expand(-1, text.shape[1], -1), "text_mask": text > 0,
                "object_vl": self.object_inputs(obj_reps, linguistic), "object_mask": regions.box_mask}

    def run_vlbert(self, inputs: dict[str, Tensor]):
        return self.vlbert(inputs["text_ids"], inputs["token_types"], inputs["text_visual"], inputs["text_mask"],
                           inputs["object_vl"], inputs["object_mask"])

    # ---- losses ---------------------------------------------------------------------------------------------
    def caption_losses(self, batch: dict, rel_logits, mlm_logits, mvrc_logits, mlm_suffix: str = "") -> dict:
        net = self.cfg.NETWORK
        out: dict[str, Tensor] = {}
        if rel_logits is not None:
            out["relationship_logits"] = rel_logits
            out["relationship_loss"] = relationship_loss(rel_logits, batch["relationship_label"])
        if mlm_logits is not None:
            out[f"mlm_logits{mlm_suffix}"] = mlm_logits
            out[f"mlm_loss{mlm_suffix}"] = mlm_loss(mlm_logits, batch["mlm_labels"], net.MLM_LOSS_NORM_IN_BATCH_FIRST)
        if mvrc_logits is not None:
            out["mvrc_logits"] = mvrc_logits
            out["mvrc_loss"] = mvrc_loss(mvrc_logits, batch["mvrc_labels"], net.MVRC_LOSS_NORM_IN_BATCH_FIRST)
        return out

    @staticmethod
    def total(out: dict) -> dict:
        """loss = sum of every *_loss output (relationship, MLM (wvc + aux), MVRC)."""
        losses = [v for k, v in out.items() if k.endswith("_loss") or "_loss_" in k]
        if not losses:
            raise ValueError("pretraining: every loss is off (NETWORK.WITH_REL_LOSS / WITH_MLM_LOSS / WITH_MVRC_LOSS)")
        out["loss"] = torch.stack(losses).sum()
        return out

    def forward(self, batch: dict) -> dict[str, Tensor]:
        rel, mlm, mvrc = self.run_vlbert(self.caption_inputs(batch))
        return self.total(self.caption_losses(batch, rel, mlm, mvrc))


class ResNetVLBERTForPretrainingMultitask(ResNetVLBERTForPretraining):
    """Image captions plus a text-only batch (`aux_text`, `aux_mlm_labels`) appended below them: the text-only rows
    carry the learned `aux_text_visual_embedding` on every token and have no objects (`text ... [END]`)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.aux_text_visual_embedding = nn.Embedding(1, cfg.NETWORK.VLBERT.visual_size)
        nn.init.normal_(self.aux_text_visual_embedding.weight, std=cfg.NETWORK.VLBERT.initializer_range)

    def merged_inputs(self, batch: dict) -> tuple[dict[str, Tensor], int]:
        """Caption rows [B1] then text-only rows [B2], text padded to a common width; returns (inputs, B1)."""
        caption = self.caption_inputs(batch)
        aux_text = batch["aux_text"]
        rows = caption["text_ids"].shape[0]
        width = max(caption["text_ids"].shape[1], aux_text.shape[1])
        aux_visual = self.aux_text_visual_embedding.weight[0].expand(*aux_text.shape, -1)
        objects = caption["object_vl"]
        merged = {
            "text_ids": torch.cat([_pad_columns(caption["text_ids"], width, 0), _pad_columns(aux_text, width, 0)]),
            "text_visual": torch.cat([_pad_columns(caption["text_visual"], width, 0.0),
                                      _pad_columns(aux_visual.to(objects.dtype), width, 0.0)]),
            "object_vl": torch.cat([objects, objects.new_zeros(aux_text.shape[0], *objects.shape[1:])]),
            "object_mask": torch.cat([caption["object_mask"],
                                      caption["object_mask"].new_zeros(aux_text.shape[0], objects.shape[1])]),
        }
        merged["token_types"] = torch.zeros_like(merged["text_ids"])
        merged["text_mask"] = merged["text_ids"] > 0
        return merged, rows

    def forward(self, batch: dict) -> dict[str, Tensor]:
        inputs, rows = self.merged_inputs(batch)
        rel, mlm, mvrc = self.run_vlbert(inputs)
        out = self.caption_losses(batch, None if rel is None else rel[:rows], None if mlm is None else mlm[:rows],
                                  None if mvrc is None else mvrc[:rows], mlm_suffix="_wvc")
        if mlm is not None:
            out["mlm_logits_aux"] = mlm[rows:]
            out["mlm_loss_aux"] = mlm_loss(mlm[rows:], batch["aux_mlm_labels"],
                                           self.cfg.NETWORK.MLM_LOSS_NORM_IN_BATCH_FIRST)
        return self.total(out)


class ResNetVLBERTForAttentionVis(ResNetVLBERTForPretrainingMultitask):
    """The multitask module with a plain VL-BERT (no heads) returning every layer's attention maps and states."""

    vlbert_class = VisualLinguisticBert

    @classmethod
    def head_flags(cls, cfg) -> dict:
        return {}

    def forward(self, batch: dict) -> dict[str, Tensor]:
        """attention_probs [B, layers, heads, L, L], hidden_states [B, layers, L, h] of the caption batch."""
        inputs = self.caption_inputs(batch)
        states = self.vlbert(inputs["text_ids"], inputs["token_types"], inputs["text_visual"], inputs["text_mask"],
                             inputs["object_vl"], inputs["object_mask"], output_all_encoded_layers=True,
                             output_attention_probs=True)
        return {"attention_probs": torch.stack(states.attention_probs, 1),
                "hidden_states": torch.stack(states.encoded, 1),
                "text_mask": inputs["text_mask"], "object_mask": inputs["object_mask"]}
