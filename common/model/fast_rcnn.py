"""The end-to-end visual front-end: ResNet C1-C4 -> RoIAlign -> C5 head -> average pool per box, then the shared
box projection of `RegionEncoder` (geometry + feature -> `obj_downsample`). With a timm NETWORK.BACKBONE: its
stride-16 map -> RoIAlign -> average pool (no C5 head; keys `backbone.trunk.*`).

Parameter names are the original `common/fast_rcnn.py` keys (`backbone.*`, `roi_head_feature_extractor.*`,
`obj_downsample.1.*`, `object_embed.*`, `regularizing_predictor.*`), so released checkpoints load after
`map_original_fast_rcnn_keys`. Precomputed box features take `PrecomputedRegions` instead (`front_ends.py`).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from common.model.backbones import ids_by_prefix, resnet_layer_ids
from common.model.region_encoder import NUM_OBJECT_CLASSES, RegionEncoder, check_image_network_keys
from common.model.resnet import (
    ResNet,
    check_frozen_stages,
    freeze_batchnorm_params,
    load_resnet_weights,
    make_stage,
    resnet_spec,
    resolve_resnet_weights_path,
    set_batchnorm_eval,
)
from common.model.state_dict_io import CheckpointError, load_state_dict_with_report
from common.model.timm_backbone import BUILTIN_RESNET, TimmBackbone, parse_backbone_args

log = logging.getLogger(__name__)

ROI_SIZE = 14
ROI_SCALE = 1.0 / 16


def pool_rois(feature_map: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
    """RoIAlign of the stride-16 map as the original ran it (14 x 14, float32, legacy alignment, one sample per bin):
    [K, C, 14, 14] in the map's dtype. `rois` as torchvision takes them: [K, 5] (image, x1, y1, x2, y2) or a list of
    [n, 4] boxes per image."""
    pooled = roi_align(feature_map.float(), rois, output_size=(ROI_SIZE, ROI_SIZE), spatial_scale=ROI_SCALE,
                       sampling_ratio=1, aligned=False)
    return pooled.to(feature_map.dtype)


class FastRCNN(RegionEncoder):
    """Per-box features [B, N, final_dim] from images [B, 3, H, W] and boxes [B, N, 4] (resized-image pixels)."""

    def __init__(self, num_layers: int = 101, c5_dilated: bool = True, stride_in_1x1: bool = True,
                 final_dim: int = 768, semantic: bool = False, enable_cnn_reg_loss: bool = False,
                 frozen_stages: Iterable[int] = (1, 2), frozen_bn: bool = True, channels_last: bool = False,
                 backbone: str = BUILTIN_RESNET, backbone_args: Mapping[str, Any] | None = None):
        super().__init__()
        self.frozen_bn = frozen_bn
        self.enable_cnn_reg_loss = enable_cnn_reg_loss
        if backbone != BUILTIN_RESNET:
            self.init_timm(backbone, backbone_args, frozen_stages, frozen_bn, channels_last, final_dim, semantic)
            return
        frozen_stages = check_frozen_stages(frozen_stages)
        block, layers = resnet_spec(num_layers)
        self.backbone = ResNet(block, layers[:3], stride_in_1x1=stride_in_1x1,
                               frozen_stages=[s for s in frozen_stages if s < 5], frozen_bn=frozen_bn,
                               channels_last=channels_last)
        # the original built this with backbone._make_layer, so its keys are those of torchvision's layer4;
        # it is as deep as that depth's layer4 (3 blocks for ResNet-34/50/101/152, 2 for ResNet-18)
        self.roi_head_feature_extractor = make_stage(
            block, self.backbone.out_channels, 512, layers[3], stride=1 if c5_dilated else 2,
            dilation=2 if c5_dilated else 1, stride_in_1x1=stride_in_1x1)
        if channels_last:
            self.roi_head_feature_extractor.to(memory_format=torch.channels_last)
        if 5 in frozen_stages:
            self.roi_head_feature_extractor.requires_grad_(False)
        if frozen_bn:
            freeze_batchnorm_params(self.roi_head_feature_extractor)
        self.feature_dim = 512 * block.expansion
        self.add_heads(final_dim, semantic)

    def add_heads(self, final_dim: int, semantic: bool) -> None:
        """The regulariser (ENABLE_CNN_REG_LOSS) and the projection, registered after the CNN (the original order)."""
        if self.enable_cnn_reg_loss:
            self.regularizing_predictor = nn.Linear(self.feature_dim, NUM_OBJECT_CLASSES)
        self.add_projection(final_dim, semantic)

    def init_timm(self, name: str, kwargs: Mapping[str, Any] | None, frozen_stages: Iterable[int], frozen_bn: bool,
                  channels_last: bool, final_dim: int, semantic: bool) -> None:
        """A timm backbone's stride-16 map under RoIAlign; the pooled RoI is the region feature (no C5 head)."""
        self.backbone = TimmBackbone(name, kwargs, frozen_stages, frozen_bn, channels_last)
        self.roi_head_feature_extractor = None
        self.feature_dim = self.backbone.out_channels
        self.add_heads(final_dim, semantic)

    @property
    def uses_timm(self) -> bool:
        return isinstance(self.backbone, TimmBackbone)

    @property
    def stages(self) -> list[nn.Module]:
        """The backbone's stages in forward order (then the C5 RoI head): what a sharded run wraps one by one."""
        if self.uses_timm:
            return list(self.backbone.stages)
        return [self.backbone.layer1, self.backbone.layer2, self.backbone.layer3, self.roi_head_feature_extractor]

    def lr_layer_ids(self) -> dict[str, tuple[int, int]]:
        """Parameter name -> (layer, layers) for TRAIN.VISUAL_LR_DECAY: stem 0 ... the C5 head last."""
        if self.uses_timm:
            return {f"backbone.{k}": v for k, v in self.backbone.lr_layer_ids().items()}
        return ids_by_prefix(self, resnet_layer_ids("backbone.", self.backbone.num_stages,
                                                    head="roi_head_feature_extractor"))

    @classmethod
    def from_config(cls, cfg: Any, **overrides) -> FastRCNN:
        """Build from cfg.NETWORK.IMAGE_* keys; keyword `overrides` replace constructor arguments.

        The regulariser follows the original VCR rule `ENABLE_CNN_REG_LOSS and not CNN_LOSS_TOP` (CNN_LOSS_TOP is
        a VCR key, absent from the other tasks' configs).
        """
        net = cfg.NETWORK
        check_image_network_keys(net)
        kwargs = dict(
            num_layers=net.IMAGE_NUM_LAYERS, c5_dilated=net.IMAGE_C5_DILATED, stride_in_1x1=net.IMAGE_STRIDE_IN_1x1,
            final_dim=net.IMAGE_FINAL_DIM, semantic=net.IMAGE_SEMANTIC,
            enable_cnn_reg_loss=bool(net.ENABLE_CNN_REG_LOSS) and not net.get("CNN_LOSS_TOP", False),
            frozen_stages=net.IMAGE_FROZEN_BACKBONE_STAGES, frozen_bn=net.IMAGE_FROZEN_BN,
            channels_last=bool(net.IMAGE_CHANNELS_LAST), backbone=net.get("BACKBONE", BUILTIN_RESNET),
            backbone_args=parse_backbone_args(net.get("BACKBONE_ARGS", ())),
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    # ---- weights ---------------------------------------------------------------------------------------------
    def load_backbone_weights(self, path: str) -> None:
        """Load a flat ResNet state dict: stem + layer1-3 into `backbone.*`, `layer4.*` into the C5 RoI head
        (a timm backbone reads its own layout: `TimmBackbone.load_weights`)."""
        if self.uses_timm:
            self.backbone.load_weights(path)
            return
        state = load_resnet_weights(path)
        stem = {k: v for k, v in state.items() if not k.startswith(("layer4.", "fc."))}
        head = {k[len("layer4."):]: v for k, v in state.items() if k.startswith("layer4.")}
        for module, part, name in ((self.backbone, stem, "stem + layer1-3"), (self.roi_head_feature_extractor, head,
                                                                             "layer4 (C5 RoI head)")):
            # Caffe-converted files may lack num_batches_tracked; anything else missing means a wrong file
            missing = [k for k in module.state_dict() if k not in part and not k.endswith("num_batches_tracked")]
            if missing:
                raise CheckpointError(f"{path}: {name} weights missing, e.g. {missing[:5]} "
                                      f"(is NETWORK.IMAGE_NUM_LAYERS right for this file?)")
            load_state_dict_with_report(module, part, source=f"{path} [{name}]")

    def load_pretrained_from_config(self, cfg: Any) -> None:
        """The original `init_weight`: load `{IMAGE_PRETRAINED}-{IMAGE_PRETRAINED_EPOCH:04d}.model` if set."""
        net = cfg.NETWORK
        if not net.IMAGE_PRETRAINED:
            log.warning("NETWORK.IMAGE_PRETRAINED is empty: the %s keeps its random initialisation",
                        f"timm {self.backbone.name}" if self.uses_timm else "ResNet")
            return
        self.load_backbone_weights(resolve_resnet_weights_path(net.IMAGE_PRETRAINED, net.IMAGE_PRETRAINED_EPOCH))

    # ---- modes -----------------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> FastRCNN:
        super().train(mode)
        if self.frozen_bn:
            self.bn_eval()
        return self

    def bn_eval(self) -> None:
        """NETWORK.IMAGE_FROZEN_BN: the image network's BatchNorms (backbone, C5 head) run on their running
        statistics; the token standardisation after the projection (STANDARDISE_VISUAL_TOKENS) keeps its mode."""
        set_batchnorm_eval(self.backbone)
        if self.roi_head_feature_extractor is not None:
            set_batchnorm_eval(self.roi_head_feature_extractor)

    # ---- forward ---------------------------------------------------------------------------------------------
    def roi_features(self, images: Tensor, boxes: Tensor, box_index: Tensor, segms: Tensor | None) -> Tensor:
        """C4 map -> RoIAlign (float32, legacy alignment) -> C5 head -> (mask) -> mean pool: [K, feature_dim].

        box_index [K, 2] = (image, box) pairs of the valid boxes.
        """
        c4 = self.backbone(images)
        rois = torch.cat([box_index[:, :1].to(torch.float32), boxes[box_index[:, 0], box_index[:, 1]].float()], 1)
        pooled = pool_rois(c4, rois)
        if self.roi_head_feature_extractor is None:  # timm backbone: pool the RoI of the map itself
            c5 = pooled
        elif self.backbone.channels_last:
            c5 = self.roi_head_feature_extractor(pooled.contiguous(memory_format=torch.channels_last))
        else:
            c5 = self.roi_head_feature_extractor(pooled)
        if segms is not None:
            masks = segms[box_index[:, 0], box_index[:, 1]].unsqueeze(1).to(c5.dtype)  # [K, 1, 14, 14]
            if masks.shape[-2:] != c5.shape[-2:]:  # non-dilated C5 is 7x7
                masks = F.adaptive_avg_pool2d(masks, c5.shape[-2:])
            c5 = c5 * masks
        return c5.mean(dim=(2, 3))

    def raw_features(self, images: Tensor | None, boxes: Tensor, box_index: Tensor, box_features: Tensor | None,
                     segms: Tensor | None) -> Tensor:
        """RoI features [K, feature_dim] of the valid boxes (`box_features` is not read)."""
        if images is None:
            raise ValueError("FastRCNN: images are None but NETWORK.IMAGE_FEAT_PRECOMPUTED is false")
        return self.roi_features(images, boxes, box_index, segms)

    def regulariser_outputs(self, feats: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
        """With ENABLE_CNN_REG_LOSS: obj_logits [K, 81], obj_labels [K], cnn_regularization_loss [1]."""
        if not self.enable_cnn_reg_loss:
            return {}
        if labels is None:
            raise ValueError("FastRCNN: NETWORK.ENABLE_CNN_REG_LOSS needs object `classes` in the batch")
        logits = self.regularizing_predictor(feats)
        return {"obj_logits": logits, "obj_labels": labels,
                "cnn_regularization_loss": F.cross_entropy(logits.float(), labels).unsqueeze(0)}


def map_original_fast_rcnn_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Fit an original FastRCNN state dict (any prefix, e.g. `image_feature_extractor.`) to this module.

    The original wrapped the C5 head in `head = Sequential(roi_head_feature_extractor, AvgPool, Flatten)`, so
    every `roi_head_feature_extractor.X` tensor also appears as `head.0.X`. Such duplicates are dropped; a
    `head.0.X` without its `roi_head_feature_extractor.X` twin is renamed to it. Other keys pass unchanged.
    """
    out: dict[str, Tensor] = {}
    marker = "head.0."
    for key, value in state_dict.items():
        pos = key.find(marker)
        is_alias = pos >= 0 and (pos == 0 or key[pos - 1] == ".")
        if not is_alias:
            out[key] = value
            continue
        twin = key[:pos] + "roi_head_feature_extractor." + key[pos + len(marker):]
        if twin in state_dict:
            if state_dict[twin].shape != value.shape or not torch.equal(state_dict[twin], value):
                log.warning("%s differs from %s; keeping %s", key, twin, twin)
            continue
        out[twin] = value
    return out
