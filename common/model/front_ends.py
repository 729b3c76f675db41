"""The visual front-ends by name, and the one place where the config picks one (`build_visual_front_end`).

A new front-end is one file with a class that implements `common.model.visual_frontend.VisualFrontEnd`, plus one
entry in `VISUAL_FRONT_ENDS` (docs/ARCHITECTURE.md). NETWORK.IMAGE_FEAT_PRECOMPUTED and NETWORK.VISUAL_TOKENS choose
(docs/VISUAL_FRONTENDS.md): precomputed box features, or RoIAlign regions, grid cells or patch tokens on images.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from common.model.fast_rcnn import FastRCNN
from common.model.grid_cells import GridCells
from common.model.patch_tokens import PatchTokens
from common.model.precomputed_regions import PrecomputedRegions
from common.model.timm_backbone import BUILTIN_RESNET

# name -> builder(cfg) returning an nn.Module that implements VisualFrontEnd
VISUAL_FRONT_ENDS: dict[str, Callable[[Any], nn.Module]] = {
    "fast_rcnn": FastRCNN.from_config,
    "precomputed": PrecomputedRegions.from_config,
    "grid": GridCells.from_config,
    "patches": PatchTokens.from_config,
}
# NETWORK.VISUAL_TOKENS -> front-end when images are read (IMAGE_FEAT_PRECOMPUTED false)
VISUAL_TOKENS = {"regions": "fast_rcnn", "grid": "grid", "patches": "patches"}


def visual_tokens(cfg: Any) -> str:
    """NETWORK.VISUAL_TOKENS, checked (configs written before the key read as `regions`)."""
    mode = cfg.NETWORK.get("VISUAL_TOKENS", "regions")
    if mode not in VISUAL_TOKENS:
        raise ValueError(f"NETWORK.VISUAL_TOKENS must be one of {sorted(VISUAL_TOKENS)}, found {mode!r}")
    return mode


def front_end_name(cfg: Any) -> str:
    """Precomputed box features (NETWORK.IMAGE_FEAT_PRECOMPUTED, the original's other path) or the NETWORK.VISUAL_TOKENS
    front-end on images."""
    net = cfg.NETWORK
    mode = visual_tokens(cfg)
    if not net.IMAGE_FEAT_PRECOMPUTED:
        return VISUAL_TOKENS[mode]
    backbone = net.get("BACKBONE", BUILTIN_RESNET)
    if mode != "regions" or backbone != BUILTIN_RESNET:
        raise ValueError(f"NETWORK.IMAGE_FEAT_PRECOMPUTED true reads the box files' features, so NETWORK.VISUAL_TOKENS "
                         f"{mode!r} / NETWORK.BACKBONE {backbone!r} would never run: set IMAGE_FEAT_PRECOMPUTED false "
                         f"(or VISUAL_TOKENS regions and BACKBONE {BUILTIN_RESNET})")
    return "precomputed"


def check_task_allows(cfg: Any, needs_regions: str | None) -> None:
    """A task whose labels refer to detected boxes (`needs_regions` says why) refuses grid cells and patches."""
    mode = visual_tokens(cfg)
    if needs_regions and mode != "regions":
        raise ValueError(f"NETWORK.VISUAL_TOKENS {mode!r} cannot serve this task: {needs_regions}. Set "
                         f"NETWORK.VISUAL_TOKENS regions (any NETWORK.BACKBONE works under RoIAlign)")


def build_visual_front_end(cfg: Any) -> nn.Module:
    """The front-end the config asks for; held by every task module as `image_feature_extractor`. With
    NETWORK.STANDARDISE_VISUAL_TOKENS its tokens are standardised, the whole-image one apart (region 0 of cells and
    patches, and box 0 of the box front-ends when DATASET.ADD_IMAGE_AS_A_BOX)."""
    name = front_end_name(cfg)
    front_end = VISUAL_FRONT_ENDS[name](cfg)
    if cfg.NETWORK.STANDARDISE_VISUAL_TOKENS:
        if not hasattr(front_end, "standardise_tokens"):
            raise ValueError(f"NETWORK.STANDARDISE_VISUAL_TOKENS true: the {name!r} front-end "
                             f"({type(front_end).__name__}) has no `standardise_tokens`; set the key false")
        whole_image_first = name in ("grid", "patches") or bool(cfg.DATASET.ADD_IMAGE_AS_A_BOX)
        front_end.standardise_tokens(whole_image_first=whole_image_first)
    return front_end
