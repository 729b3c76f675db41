"""Task-module weights between this project's key layout and the original VL-BERT checkpoints' layout, both ways.

The original's keys differ from ours in three ways (sheet §1.11, §2.9, §4.4): every key starts with `module.`
(saved from a DDP/DataParallel wrapper); VCR wraps VL-BERT in TimeDistributed, so its keys read `vlbert._module.*`;
and in end-to-end mode each `image_feature_extractor.roi_head_feature_extractor.X` tensor appears a second time as
`image_feature_extractor.head.0.X` (the same tensor, reached through the `head` Sequential).
"""
from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from common.model.fast_rcnn import map_original_fast_rcnn_keys

TASKS = ("pretrain", "vcr", "vqa", "refcoco")
MODULE_PREFIX = "module."
VCR_OURS, VCR_ORIGINAL = "vlbert.", "vlbert._module."
ROI_HEAD = "image_feature_extractor.roi_head_feature_extractor."
ROI_HEAD_ALIAS = "image_feature_extractor.head.0."


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {list(TASKS)}")


def from_original(state_dict: Mapping[str, Tensor], task: str) -> dict[str, Tensor]:
    """Original keys -> ours: strip `module.`, VCR's `vlbert._module.` -> `vlbert.`, drop the `head.0.*` aliases
    (a `head.0.X` without its `roi_head_feature_extractor.X` twin is renamed to it). Keys already in our layout
    pass unchanged, so the function is idempotent. Tensors are not copied."""
    _check_task(task)
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(MODULE_PREFIX):
            key = key[len(MODULE_PREFIX):]
        if task == "vcr" and key.startswith(VCR_ORIGINAL):
            key = VCR_OURS + key[len(VCR_ORIGINAL):]
        if key in out:
            raise ValueError(f"two checkpoint keys map to {key!r} (a file mixing both layouts?)")
        out[key] = value
    return map_original_fast_rcnn_keys(out)


def to_original(state_dict: Mapping[str, Tensor], task: str, module_prefix: bool = True) -> dict[str, Tensor]:
    """Our keys -> the original's: VCR `vlbert.` -> `vlbert._module.`, a `head.0.X` alias next to every
    `roi_head_feature_extractor.X` (the same tensor object), and `module.` in front of every key unless
    `module_prefix` is false. A `module.` already present is not doubled. Tensors are not copied."""
    _check_task(task)
    prefix = MODULE_PREFIX if module_prefix else ""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(MODULE_PREFIX):
            key = key[len(MODULE_PREFIX):]
        if task == "vcr" and key.startswith(VCR_OURS) and not key.startswith(VCR_ORIGINAL):
            key = VCR_ORIGINAL + key[len(VCR_OURS):]
        out[prefix + key] = value
        if key.startswith(ROI_HEAD):
            out[prefix + ROI_HEAD_ALIAS + key[len(ROI_HEAD):]] = value
    return out
