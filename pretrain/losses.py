"""Pretraining losses: masked-token cross-entropy, soft cross-entropy over masked regions, relationship CE.

Each loss stays a connected zero when a batch has nothing to predict (no masked token / region), instead of NaN.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from common.data.masking import IGNORE_LABEL

EPS = 1e-4


def _mean(per_item: Tensor, valid: Tensor, norm_in_batch_first: bool) -> Tensor:
    """per_item [B, K] (zero where not valid) -> scalar.

    Default: mean over all valid items of the batch. `norm_in_batch_first`: mean per sample, then the mean over
    the samples that have any valid item (the +1e-4 guards of the original)."""
    if not norm_in_batch_first:
        return per_item.sum() / valid.sum().clamp(min=1)
    counts = valid.sum(1).to(per_item.dtype)
    per_sample = per_item.sum(1) / (counts + EPS)
    return per_sample.sum() / ((counts > 0).sum().to(per_item.dtype) + EPS)


def mlm_loss(logits: Tensor, labels: Tensor, norm_in_batch_first: bool = False) -> Tensor:
    """logits [B, T, V], labels [B, T'] (-1 = not predicted; T' <= T, logits beyond T' ignored) -> scalar."""
    logits = logits[:, : labels.shape[1]].float()
    if logits.shape[1] < labels.shape[1]:
        raise ValueError(f"mlm_loss: {logits.shape[1]} text positions for labels of length {labels.shape[1]}")
    valid = labels != IGNORE_LABEL
    per_token = F.cross_entropy(logits.transpose(1, 2), labels.long(), ignore_index=IGNORE_LABEL, reduction="none")
    return _mean(per_token * valid, valid, norm_in_batch_first)


def valid_region_rows(labels: Tensor, tolerance: float = 0.1) -> Tensor:
    """Rows that carry a target: a class distribution summing to 1 (+- tolerance). labels [B, N, C] -> [B, N]."""
    return (labels.float().sum(-1) - 1.0).abs() < tolerance


def mvrc_loss(logits: Tensor, labels: Tensor, norm_in_batch_first: bool = False) -> Tensor:
    """Soft cross-entropy sum_c -target_c log softmax(logits)_c over valid rows. logits/labels [B, N, C]."""
    if logits.shape[-1] != labels.shape[-1]:
        raise ValueError(f"mvrc_loss: the MVRC head predicts {logits.shape[-1]} classes but the targets have "
                         f"{labels.shape[-1]} (set NETWORK.VLBERT.visual_region_classes to the detector's class count)")
    labels = labels[:, : logits.shape[1]].float()
    valid = valid_region_rows(labels)
    per_row = -(labels * F.log_softmax(logits[:, : labels.shape[1]].float(), dim=-1)).sum(-1)
    return _mean(per_row * valid, valid, norm_in_batch_first)


def relationship_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """logits [B, 2], labels [B] (1 = the caption belongs to the image)."""
    return F.cross_entropy(logits.float(), labels.view(-1).long())
