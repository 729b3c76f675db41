"""VL-BERT's pretraining heads: masked language model (tied decoder), masked visual region classes, relationship.

Attribute names give the original state-dict keys (`mlm_head.predictions.transform.dense`, `mvrc_head.region_cls_pred`).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from common.model.bert_encoder import activation


class PredictionTransform(nn.Module):
    """dense + activation + LayerNorm (BERT's `cls.predictions.transform`); also the VQA `mlm` classifier head."""

    def __init__(self, hidden: int, act: str):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.transform_act_fn = activation(act)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: Tensor) -> Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(x)))


class _LMPrediction(nn.Module):
    """transform -> decoder (weight tied to the word embeddings, no bias) + a separate output bias."""

    def __init__(self, hidden: int, act: str, word_embedding_weight: nn.Parameter):
        super().__init__()
        self.transform = PredictionTransform(hidden, act)
        self.decoder = nn.Linear(hidden, word_embedding_weight.shape[0], bias=False, device="meta")
        self.decoder.weight = word_embedding_weight
        self.bias = nn.Parameter(torch.zeros(word_embedding_weight.shape[0]))

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.transform(x)) + self.bias


class MLMHead(nn.Module):
    def __init__(self, hidden: int, act: str, word_embedding_weight: nn.Parameter):
        super().__init__()
        self.predictions = _LMPrediction(hidden, act, word_embedding_weight)

    def forward(self, text_states: Tensor) -> Tensor:
        return self.predictions(text_states)


class MVRCTransform(nn.Module):
    """Linear(h, h) + activation, no LayerNorm (as the original); reused by the VCR and RefCOCO+ heads, which load
    it from `mvrc_head.transform` through the original prefix changes."""

    def __init__(self, hidden: int, act: str):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.act = activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.dense(x))


class MVRCHead(nn.Module):
    def __init__(self, hidden: int, act: str, num_classes: int):
        super().__init__()
        self.transform = MVRCTransform(hidden, act)
        self.region_cls_pred = nn.Linear(hidden, num_classes)

    def forward(self, object_states: Tensor) -> Tensor:
        return self.region_cls_pred(self.transform(object_states))


class RelationshipHead(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.caption_image_relationship = nn.Linear(hidden, 2)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.caption_image_relationship(pooled)
