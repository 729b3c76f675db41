"""VL-BERT for image-text retrieval: a cheap dual encoder for the first stage (the last layer's [CLS] state of a
text-only and of an image-only pass, projected and L2-normalised) and the image-text matching head (`final_mlp` over
the pooled state of the pair, shared with `itm/` through `common/model/image_text.py`) that re-scores the best
candidates.

The dual encoder reads the [CLS] state before the pooler, as ALBEF's unimodal encoders do: the pooler (tanh(dense))
belongs to the matching head, and when both objectives trained it the contrastive loss did not move on the toy world
(ln 16 for three epochs, the image-only [CLS] identical for every image) while the head's loss fell.

Each [CLS] state is standardised per dimension (`itc_text_norm`, `itc_image_norm`: BatchNorm1d without affine
parameters, batch statistics in training and running ones at evaluation, as the projection heads of SimCLR and MoCo v3)
before its projection. After VL-BERT pre-training, which trains no [CLS] objective, one component common to every
input dominates those states (cosine > 0.9999 between the image-only [CLS] of any two images); what tells items apart
is a small remainder that a plain linear projection followed by L2 normalisation barely sees, so the contrastive loss
stays near ln(batch) for epochs. Centred, the same frozen states support near-perfect retrieval on the toy world
(docs/EVALUATION.md).

Training loss (a batch of captions with their images) = in-batch contrastive loss of the dual encoder (ITC) + binary
cross-entropy of the matching head on every positive pair and, per pair, the hardest in-batch negative caption of its
image and the hardest negative image of its caption, chosen by the dual-encoder similarity (ALBEF's hard negatives,
taken as the argmax rather than sampled, so a batch always gives the same pairs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.data.tokenizer import BertTokenizer
from common.model.image_text import check_matching_config, matching_head, pair_states, pooled_pair_states
from common.model.standardise import Standardise
from common.model.task_base import VLBertTaskModule


class VLBertForRetrieval(VLBertTaskModule):
    """Batches with `text` only -> `text_embedding` [B, E]; with boxes only -> `image_embedding` [B, E]; with both
    -> `match_logits` [B]; with both and `image_index` -> the training loss (see the module docstring)."""

    def __init__(self, cfg, cls_id: int = 101, sep_id: int = 102):
        super().__init__(cfg)
        check_matching_config(cfg, "retrieval")
        net = cfg.NETWORK
        self.cls_id, self.sep_id = int(cls_id), int(sep_id)
        self.temperature = float(net.ITC_TEMPERATURE)
        if self.temperature <= 0:
            raise ValueError(f"NETWORK.ITC_TEMPERATURE must be > 0, found {self.temperature}")
        self.final_mlp = matching_head(cfg)
        # the pretraining name: a text-only row's visual feature, loaded from a VL-BERT pretraining checkpoint
        self.aux_text_visual_embedding = nn.Embedding(1, net.VLBERT.visual_size)
        nn.init.normal_(self.aux_text_visual_embedding.weight, std=net.VLBERT.initializer_range)
        self.itc_text_proj = nn.Linear(net.VLBERT.hidden_size, int(net.ITC_DIM))
        self.itc_image_proj = nn.Linear(net.VLBERT.hidden_size, int(net.ITC_DIM))
        self.itc_text_norm = Standardise(net.VLBERT.hidden_size)
        self.itc_image_norm = Standardise(net.VLBERT.hidden_size)

    @classmethod
    def build(cls, cfg) -> VLBertForRetrieval:
        tokenizer = BertTokenizer.from_pretrained_dir(cfg.NETWORK.BERT_MODEL_NAME)
        return cls(cfg, tokenizer.cls_id, tokenizer.sep_id)

    # ---- the first stage -------------------------------------------------------------------------------------
    def embed_text(self, ids: Tensor) -> Tensor:
        """ids [B, T] (`[CLS] caption [SEP]`, 0-padded) -> [B, E] unit vectors; no objects, every token carrying the
        learned text-only visual feature (as pretraining's text-only rows)."""
        visual = self.aux_text_visual_embedding.weight[0].expand(*ids.shape, -1)
        no_objects = visual.new_zeros(ids.shape[0], 1, visual.shape[-1] + self.cfg.NETWORK.VLBERT.hidden_size)
        states = self.vlbert(ids, torch.zeros_like(ids), visual, ids > 0, no_objects,
                             ids.new_zeros(ids.shape[0], 1, dtype=torch.bool), output_all_encoded_layers=False)
        return F.normalize(self.itc_text_proj(self.itc_text_norm(states.encoded[:, 0])).float(), dim=-1)

    def embed_image(self, obj_reps: Tensor, box_mask: Tensor) -> Tensor:
        """obj_reps [B, N, D], box_mask [B, N] -> [B, E] unit vectors of `[CLS] [SEP]` over the boxes (its [CLS]
        state)."""
        ids = torch.tensor([self.cls_id, self.sep_id], device=obj_reps.device).expand(obj_reps.shape[0], -1)
        states = pair_states(self, ids, obj_reps, box_mask)
        return F.normalize(self.itc_image_proj(self.itc_image_norm(states.encoded[:, 0])).float(), dim=-1)

    # ---- the second stage ------------------------------------------------------------------------------------
    def match_logits(self, ids: Tensor, obj_reps: Tensor, box_mask: Tensor) -> Tensor:
        """[B] matching logits of caption ids [B, T] over the boxes of obj_reps [B, N, D]."""
        return self.final_mlp(pooled_pair_states(self, ids, obj_reps, box_mask)).squeeze(-1).float()

    def forward(self, batch: dict) -> dict[str, Tensor]:
        if "boxes" not in batch:
            return {"text_embedding": self.embed_text(batch["text"])}
        regions = self.encode_regions(batch)
        if "text" not in batch:
            return {"image_embedding": self.embed_image(regions.obj_reps, regions.box_mask)}
        if "image_index" not in batch:
            return {"match_logits": self.match_logits(batch["text"], regions.obj_reps, regions.box_mask)}
        return self.training_losses(batch["text"], regions.obj_reps, regions.box_mask, batch["image_index"])

    # ---- training --------------------------------------------------------------------------------------------
    def training_losses(self, ids: Tensor, obj_reps: Tensor, box_mask: Tensor, image_index: Tensor) -> dict:
        """ITC over the batch + matching BCE over positives and hard negatives; `match_logits` / `match_labels`
        [P] for the metric, `similarity` [B, B] (caption rows, image columns, divided by the temperature)."""
        similarity = self.embed_text(ids) @ self.embed_image(obj_reps, box_mask).T / self.temperature
        positive = image_index[:, None] == image_index[None, :]
        itc = contrastive_loss(similarity, positive)
        excluded = positive | (ids[:, None, :] == ids[None, :, :]).all(-1)  # same image, or the very same words
        # per image, its hardest other caption; per caption, its hardest other image
        caption_images, hard_captions = hard_negatives(similarity.detach(), excluded)
        image_captions, hard_images = hard_negatives(similarity.detach().T, excluded.T)
        everyone = torch.arange(len(ids), device=ids.device)
        captions = torch.cat([everyone, hard_captions, image_captions])
        images = torch.cat([everyone, caption_images, hard_images])
        labels = torch.cat([torch.ones(len(ids)), torch.zeros(len(captions) - len(ids))]).to(obj_reps.device)
        logits = self.match_logits(ids[captions], obj_reps[images], box_mask[images])
        itm = F.binary_cross_entropy_with_logits(logits, labels)
        return {"itc_loss": itc, "itm_loss": itm, "loss": itc + itm, "match_logits": logits, "match_labels": labels,
                "similarity": similarity.detach()}


def contrastive_loss(similarity: Tensor, positive: Tensor) -> Tensor:
    """Mean of the caption->image and image->caption cross-entropies of similarity [B, B] (caption rows) against
    targets spread evenly over each row's (column's) positives; positive [B, B] bool, its diagonal True."""
    targets = positive.float()
    t2i = -(F.log_softmax(similarity, 1) * targets / targets.sum(1, keepdim=True)).sum(1).mean()
    i2t = -(F.log_softmax(similarity, 0) * targets / targets.sum(0, keepdim=True)).sum(0).mean()
    return (t2i + i2t) / 2


def hard_negatives(similarity: Tensor, excluded: Tensor) -> tuple[Tensor, Tensor]:
    """For each column c of similarity [R, C] with a candidate row not `excluded` [R, C]: (c, the highest-scoring
    such row); returns (columns [P], rows [P]). Ties go to the lower row index."""
    scores = similarity.masked_fill(excluded, float("-inf"))
    best = scores.argmax(0)
    has_candidate = (~excluded).any(0)
    columns = has_candidate.nonzero().squeeze(1)
    return columns, best[columns]
