"""VL-BERT for RefCOCO+: `[CLS] expression [SEP]` over every candidate box; each box's output state gets a logit,
trained with binary cross-entropy against its IoU label; the top-scoring box is the prediction.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.data.tokenizer import BertTokenizer
from common.model.task_base import VLBertTaskModule, gather_by_tags
from common.model.vlbert_heads import MVRCTransform

PAD_LOGIT = -10000.0  # logit of padded boxes, as the original


def expression_text(expression_ids: Tensor, cls_id: int, sep_id: int) -> tuple[Tensor, Tensor]:
    """[B, L] expression ids (left-aligned, padded 0) -> `[CLS] expr [SEP]` ids [B, L + 2] and text mask."""
    batch, width = expression_ids.shape
    lengths = (expression_ids > 0).sum(1)
    ids = expression_ids.new_zeros(batch, width + 2)
    ids[:, 0] = cls_id
    ids[:, 1:width + 1] = expression_ids
    ids.scatter_(1, (lengths + 1).unsqueeze(1), sep_id)
    mask = torch.arange(width + 2, device=ids.device).unsqueeze(0) < (lengths + 2).unsqueeze(1)
    return ids, mask


def boxes_to_original(boxes: Tensor, im_info: Tensor, flipped: Tensor | None = None) -> Tensor:
    """[B, 4] xyxy boxes in resized (and possibly flipped) pixels -> original-image pixels.

    im_info [B, 4] = (resized w, resized h, scale_x, scale_y); a flipped box is mapped back with x -> w - 1 - x.
    """
    boxes = boxes.float().clone()
    if flipped is not None and bool(flipped.any()):
        width = im_info[:, 0]
        x1 = torch.where(flipped, width - 1 - boxes[:, 2], boxes[:, 0])
        x2 = torch.where(flipped, width - 1 - boxes[:, 0], boxes[:, 2])
        boxes[:, 0], boxes[:, 2] = x1, x2
    scale = torch.stack([im_info[:, 2], im_info[:, 3], im_info[:, 2], im_info[:, 3]], dim=1)
    return boxes / scale


class ResNetVLBERTForRefCOCO(VLBertTaskModule):
    """Outputs `logits` [B, N] (one per candidate, -10000 for padding), `pred_boxes` [B, 4] in original pixels,
    and with labels `cls_loss` / `loss` (BCE over the valid boxes)."""

    def __init__(self, cfg, cls_id: int, sep_id: int):
        super().__init__(cfg)
        net = cfg.NETWORK
        hidden = net.VLBERT.hidden_size
        self.cls_id, self.sep_id = cls_id, sep_id
        self.final_mlp = nn.Sequential(MVRCTransform(hidden, net.VLBERT.hidden_act),
                                       nn.Dropout(net.CLASSIFIER_DROPOUT), nn.Linear(hidden, 1))
        for layer in (self.final_mlp[0].dense, self.final_mlp[2]):
            nn.init.normal_(layer.weight, std=net.VLBERT.initializer_range)
            nn.init.zeros_(layer.bias)

    @classmethod
    def needs_regions(cls, cfg) -> str | None:
        return "RefCOCO+ scores each candidate box (its labels are box IoUs)"

    @classmethod
    def build(cls, cfg) -> ResNetVLBERTForRefCOCO:
        """Construct with the BERT folder's [CLS] and [SEP] ids."""
        tokenizer = BertTokenizer.from_pretrained_dir(cfg.NETWORK.BERT_MODEL_NAME)
        return cls(cfg, cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id)

    def forward(self, batch: dict) -> dict[str, Tensor]:
        regions = self.encode_regions(batch)
        ids, text_mask = expression_text(batch["expression_ids"], self.cls_id, self.sep_id)
        whole_image = gather_by_tags(regions.obj_reps, torch.zeros_like(ids))  # every token sees box 0
        states = self.vlbert(
            ids, torch.zeros_like(ids), whole_image, text_mask, self.object_inputs(regions.obj_reps), regions.box_mask,
            output_all_encoded_layers=False, output_text_and_object_separately=True)
        logits = self.final_mlp(states.objects).squeeze(-1).float()
        logits = logits.masked_fill(~regions.box_mask, PAD_LOGIT)
        full_width = batch["boxes"].shape[1]
        if logits.shape[1] < full_width:
            logits = F.pad(logits, (0, full_width - logits.shape[1]), value=PAD_LOGIT)
        best = logits.argmax(1)
        best_boxes = batch["boxes"][torch.arange(len(best), device=best.device), best]
        outputs = {"logits": logits,
                   "pred_boxes": boxes_to_original(best_boxes, batch["im_info"], batch.get("flipped"))}
        if "labels" in batch:
            labels = batch["labels"].float()
            valid = labels > -0.5
            loss = F.binary_cross_entropy_with_logits(logits[valid], labels[valid])
            outputs.update(cls_loss=loss, loss=loss)
        return outputs
