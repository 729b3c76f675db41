"""Per-dimension standardisation of feature rows: `Standardise`, a BatchNorm1d without affine parameters.

Used where one component common to every input dominates a feature and the part that tells inputs apart is a small
remainder: the retrieval dual encoder's [CLS] states (retrieval/module.py) and, with NETWORK.STANDARDISE_VISUAL_TOKENS,
the visual tokens of a front-end (common/model/region_encoder.py, docs/VISUAL_FRONTENDS.md).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Standardise(nn.BatchNorm1d):
    """Per-dimension standardisation of [K, C] rows: batch statistics in training, running ones at evaluation; a
    training batch of one row has no spread of its own and reads the running statistics."""

    def __init__(self, num_features: int):
        super().__init__(num_features, affine=False)

    def forward(self, states: Tensor) -> Tensor:
        if self.training and states.shape[0] == 1:
            return F.batch_norm(states, self.running_mean, self.running_var, training=False, eps=self.eps)
        return super().forward(states)
