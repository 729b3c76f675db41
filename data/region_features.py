"""2048-d RoI features of our FastRCNN (ResNet C4 -> RoIAlign -> C5 -> mean pool) for detected boxes, so box files
made by `data/extract_boxes.py --with-features` also serve NETWORK.IMAGE_FEAT_PRECOMPUTED configs."""
from __future__ import annotations

import importlib

import torch
from torch import Tensor, nn

from common.config import load_config
from common.data.transforms import (
    CAFFE_PIXEL_MEANS,
    VisualTransform,
    clamp_boxes,
    pad_images,
    prepend_whole_image_box,
)
from common.model.fast_rcnn import FastRCNN, map_original_fast_rcnn_keys
from common.model.pretrained import checkpoint_state_dict, strip_module_prefix
from common.model.state_dict_io import CheckpointError, load_state_dict_with_report, read_checkpoint_file

RESNET_PREFIXES = ("backbone.", "roi_head_feature_extractor.")


def load_resnet_from_checkpoint(extractor: FastRCNN, ckpt: str) -> None:
    """The `image_feature_extractor.{backbone,roi_head_feature_extractor}.*` tensors of a training checkpoint
    (ours or the original's, `module.` and `head.0.*` aliases handled); every ResNet key must be there."""
    state = strip_module_prefix(checkpoint_state_dict(read_checkpoint_file(ckpt), ckpt))
    prefix = "image_feature_extractor."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    state = {k: v for k, v in map_original_fast_rcnn_keys(state).items() if k.startswith(RESNET_PREFIXES)}
    missing = [k for k in extractor.state_dict() if k.startswith(RESNET_PREFIXES) and k not in state
               and not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(f"{ckpt}: no FastRCNN ResNet weights ({len(missing)} keys missing, e.g. {missing[:4]}); "
                              f"pass a checkpoint trained end to end (NETWORK.IMAGE_FEAT_PRECOMPUTED false)")
    for prefix in RESNET_PREFIXES:  # per part, so the projection layers (not needed here) are not reported missing
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        load_state_dict_with_report(getattr(extractor, prefix[:-1]), part, source=f"{ckpt} [{prefix}*]")


def load_feature_extractor(cfg_path: str, ckpt: str | None, task: str) -> tuple[FastRCNN, VisualTransform]:
    """Our FastRCNN (end-to-end layout) and the image transform (SCALES, PIXEL_MEANS/STDS) of a `task` config.

    Weights: the training checkpoint `ckpt` if given, else NETWORK.IMAGE_PRETRAINED (an ImageNet ResNet).
    """
    add_defaults = getattr(importlib.import_module(f"{task}.config"), f"add_{task}_defaults")
    cfg = load_config(cfg_path, add_task_defaults=add_defaults)
    extractor = FastRCNN.from_config(cfg, enable_cnn_reg_loss=False, semantic=False)
    if ckpt:
        load_resnet_from_checkpoint(extractor, ckpt)
    else:
        extractor.load_pretrained_from_config(cfg)
    scales = tuple(cfg.SCALES)
    transform = VisualTransform(min_size=int(scales[0]), max_size=int(scales[1]),
                                pixel_means=tuple(cfg.NETWORK.PIXEL_MEANS) or CAFFE_PIXEL_MEANS,
                                pixel_stds=tuple(cfg.NETWORK.PIXEL_STDS) or (1.0, 1.0, 1.0))
    return extractor.eval(), transform


@torch.no_grad()
def roi_features(extractor: nn.Module, items: list[dict], detections: list[dict], device) -> list[Tensor]:
    """Per image [1 + K, feature_dim]: row 0 = the whole image box, then the detected boxes.

    Boxes are moved to the resized image as the datasets do: whole-image box [0, 0, w-1, h-1] prepended in original
    pixels, all scaled by im_info's factors, then clamped to the resized image.
    """
    images = pad_images([item["caffe_image"] for item in items]).to(device)
    rows = []
    for item, det in zip(items, detections, strict=True):
        new_w, new_h, sx, sy = item["im_info"].tolist()
        boxes = prepend_whole_image_box(det["boxes"].cpu().float(), item["size"][0], item["size"][1])
        rows.append(clamp_boxes(boxes * torch.tensor([sx, sy, sx, sy]), new_w, new_h))
    longest = max(len(r) for r in rows)
    boxes = torch.full((len(rows), longest, 4), -2.0)
    for i, r in enumerate(rows):
        boxes[i, : len(r)] = r
    box_index = (boxes[..., 0] > -1.5).nonzero()
    feats = extractor.roi_features(images, boxes.to(device), box_index.to(device), None).float().cpu()
    return list(feats.split([len(r) for r in rows]))
