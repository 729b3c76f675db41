"""VL-BERT for image-text matching: `[CLS] caption [SEP]` over every box; the pooled `[CLS]` state goes through
`final_mlp` (Dropout, Linear(h, 1)) to one logit, trained with binary cross-entropy against the match label."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from common.model.image_text import check_matching_config, matching_head, pooled_pair_states
from common.model.task_base import VLBertTaskModule


class VLBertForImageTextMatching(VLBertTaskModule):
    """Outputs `match_logits` [B]; with `label` in the batch also `itm_loss` and `loss` (mean BCE)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        check_matching_config(cfg, "image-text matching")
        self.final_mlp = matching_head(cfg)

    def forward(self, batch: dict) -> dict[str, Tensor]:
        """batch: text [B, T] (0-padded ids), boxes [B, N, 4] (-2-padded), box_features [B, N, D], im_info [B, 4]."""
        regions = self.encode_regions(batch)
        pooled = pooled_pair_states(self, batch["text"], regions.obj_reps, regions.box_mask)
        logits = self.final_mlp(pooled).squeeze(-1).float()
        outputs = {"match_logits": logits}
        if "label" in batch:
            loss = F.binary_cross_entropy_with_logits(logits, batch["label"].float())
            outputs.update(itm_loss=loss, loss=loss)
        return outputs
