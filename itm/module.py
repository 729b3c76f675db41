"""VL-BERT for image-text matching: `[CLS] caption [SEP]` over every box; the pooled `[CLS]` state goes through
`final_mlp` (Dropout, Linear(h, 1)) to one logit, trained with binary cross-entropy against the match label."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.model.task_base import VLBertTaskModule, gather_by_tags


class VLBertForImageTextMatching(VLBertTaskModule):
    """Outputs `match_logits` [B]; with `label` in the batch also `itm_loss` and `loss` (mean BCE)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        net = cfg.NETWORK
        if not net.VLBERT.with_pooler:
            raise ValueError("image-text matching reads the pooled [CLS] state: set NETWORK.VLBERT.with_pooler true")
        if not cfg.DATASET.ADD_IMAGE_AS_A_BOX:
            raise ValueError("image-text matching needs DATASET.ADD_IMAGE_AS_A_BOX true: caption tokens read their "
                             "visual feature from the whole-image box 0")
        self.final_mlp = nn.Sequential(nn.Dropout(float(net.CLASSIFIER_DROPOUT)),
                                       nn.Linear(net.VLBERT.hidden_size, 1))
        nn.init.xavier_uniform_(self.final_mlp[1].weight)
        nn.init.zeros_(self.final_mlp[1].bias)

    def forward(self, batch: dict) -> dict[str, Tensor]:
        """batch: text [B, T] (0-padded ids), boxes [B, N, 4] (-2-padded), box_features [B, N, D], im_info [B, 4]."""
        regions = self.encode_regions(batch)
        ids = batch["text"]
        text_mask = ids > 0
        token_types = torch.zeros_like(ids)
        text_visual = gather_by_tags(regions.obj_reps, torch.zeros_like(ids))  # every token sees the whole-image box
        states = self.vlbert(ids, token_types, text_visual, text_mask, self.object_inputs(regions.obj_reps),
                             regions.box_mask, output_all_encoded_layers=False)
        logits = self.final_mlp(states.pooled).squeeze(-1).float()
        outputs = {"match_logits": logits}
        if "label" in batch:
            loss = F.binary_cross_entropy_with_logits(logits, batch["label"].float())
            outputs.update(itm_loss=loss, loss=loss)
        return outputs
