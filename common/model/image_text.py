"""Pieces shared by the tasks that score an (image, caption) pair with VL-BERT: the caption read over every box
(`[CLS] caption [SEP]`, each token seeing the whole-image box) and the one-logit matching head `final_mlp`.

Image-text matching (`itm/`) and retrieval (`retrieval/`) both use them, so checkpoints of one load into the other.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from common.model.task_base import VLBertTaskModule, gather_by_tags
from common.model.vlbert_outputs import VLBertOutput


def check_matching_config(cfg, task: str) -> None:
    """The pair encoder reads the pooled [CLS] state and gives every caption token the whole-image box 0."""
    if not cfg.NETWORK.VLBERT.with_pooler:
        raise ValueError(f"{task} reads the pooled [CLS] state: set NETWORK.VLBERT.with_pooler true")
    if not cfg.DATASET.ADD_IMAGE_AS_A_BOX:
        raise ValueError(f"{task} needs DATASET.ADD_IMAGE_AS_A_BOX true: caption tokens read their visual feature "
                         "from the whole-image box 0")


def matching_head(cfg) -> nn.Sequential:
    """`final_mlp`: Dropout(NETWORK.CLASSIFIER_DROPOUT), Linear(hidden, 1) with Xavier weights and a zero bias."""
    head = nn.Sequential(nn.Dropout(float(cfg.NETWORK.CLASSIFIER_DROPOUT)),
                         nn.Linear(cfg.NETWORK.VLBERT.hidden_size, 1))
    nn.init.xavier_uniform_(head[1].weight)
    nn.init.zeros_(head[1].bias)
    return head


def pair_states(module: VLBertTaskModule, ids: Tensor, obj_reps: Tensor, box_mask: Tensor) -> VLBertOutput:
    """Last-layer states [B, L, h] and pooled [CLS] state [B, h] of `[CLS] caption [SEP]` (ids [B, T], 0-padded)
    over the boxes obj_reps [B, N, D] (box_mask [B, N]); every token reads the whole-image box 0 as its visual
    feature, segment 0."""
    text_visual = gather_by_tags(obj_reps, torch.zeros_like(ids))
    return module.vlbert(ids, torch.zeros_like(ids), text_visual, ids > 0, module.object_inputs(obj_reps),
                         box_mask, output_all_encoded_layers=False)


def pooled_pair_states(module: VLBertTaskModule, ids: Tensor, obj_reps: Tensor, box_mask: Tensor) -> Tensor:
    """The pooled [CLS] state [B, h] of `pair_states`."""
    return pair_states(module, ids, obj_reps, box_mask).pooled
