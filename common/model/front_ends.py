"""The visual front-ends by name, and the one place where the config picks one (`build_visual_front_end`).

A new front-end (timm grid features, ViT patches, ...) is one file with a class that implements
`common.model.visual_frontend.VisualFrontEnd`, plus one entry in `VISUAL_FRONT_ENDS` (docs/ARCHITECTURE.md).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from common.model.fast_rcnn import FastRCNN
from common.model.precomputed_regions import PrecomputedRegions

# name -> builder(cfg) returning an nn.Module that implements VisualFrontEnd
VISUAL_FRONT_ENDS: dict[str, Callable[[Any], nn.Module]] = {
    "fast_rcnn": FastRCNN.from_config,
    "precomputed": PrecomputedRegions.from_config,
}


def front_end_name(cfg: Any) -> str:
    """NETWORK.IMAGE_FEAT_PRECOMPUTED chooses between the original's two paths."""
    return "precomputed" if cfg.NETWORK.IMAGE_FEAT_PRECOMPUTED else "fast_rcnn"


def build_visual_front_end(cfg: Any) -> nn.Module:
    """The front-end the config asks for; held by every task module as `image_feature_extractor`."""
    return VISUAL_FRONT_ENDS[front_end_name(cfg)](cfg)
