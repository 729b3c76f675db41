"""The stride-16 feature map behind the grid front-end, whichever NETWORK.BACKBONE gives it: the original's ResNet
(C1-C4, keys `backbone.conv1.*`, `backbone.layer1.*`, ...) or a timm model (`backbone.trunk.*`).

Both answer the same questions: `forward(images)` -> [B, C, H/16, W/16], `out_channels`, `stages` (the modules a
sharded run may wrap one by one), `lr_layer_ids()` (TRAIN.VISUAL_LR_DECAY) and `load_pretrained_from_config(cfg)`.
"""
from __future__ import annotations

import logging
from typing import Any

from torch import nn

from common.model.resnet import ResNet, load_resnet_weights, resnet_spec, resolve_resnet_weights_path
from common.model.state_dict_io import CheckpointError, load_state_dict_with_report, summarize_keys
from common.model.timm_backbone import BUILTIN_RESNET, TimmBackbone

log = logging.getLogger(__name__)


def resnet_layer_ids(prefix: str, num_stages: int, head: str | None = None) -> dict[str, int]:
    """Module-name prefix -> layer of the original ResNet: stem (conv1, bn1) 0, layerK K, a C5 `head` last."""
    layers = {f"{prefix}conv1.": 0, f"{prefix}bn1.": 0}
    layers.update({f"{prefix}layer{k}.": k for k in range(1, num_stages + 1)})
    if head is not None:
        layers[f"{head}."] = num_stages + 1
    return layers


def ids_by_prefix(module: nn.Module, layers: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Parameter name -> (layer, number of layers) from a module-prefix table (names outside it are left out)."""
    count = max(layers.values()) + 1
    out = {}
    for name, _ in module.named_parameters():
        layer = next((v for k, v in layers.items() if name.startswith(k)), None)
        if layer is not None:
            out[name] = (layer, count)
    return out


class ResNetC4(ResNet):
    """The original ResNet's stem + layer1-3 (stride 16): the grid front-end's map with NETWORK.BACKBONE resnet.

    IMAGE_FROZEN_BACKBONE_STAGES 1-4 as in FastRCNN; 5 (the C5 RoI head) does not exist here and is ignored.
    """

    @classmethod
    def from_config(cls, cfg: Any, num_stages: int = 3) -> ResNetC4:
        net = cfg.NETWORK
        block, layers = resnet_spec(net.IMAGE_NUM_LAYERS)
        return cls(block, layers[:num_stages], stride_in_1x1=net.IMAGE_STRIDE_IN_1x1,
                   frozen_stages=[s for s in net.IMAGE_FROZEN_BACKBONE_STAGES if int(s) < 5],
                   frozen_bn=net.IMAGE_FROZEN_BN, channels_last=bool(net.IMAGE_CHANNELS_LAST))

    @property
    def stages(self) -> list[nn.Module]:
        return [getattr(self, f"layer{k}") for k in range(1, self.num_stages + 1)]

    def lr_layer_ids(self) -> dict[str, tuple[int, int]]:
        return ids_by_prefix(self, resnet_layer_ids("", self.num_stages))

    def load_weights(self, path: str) -> None:
        """A flat torchvision-style ResNet file; layer4 (and fc) are not part of the map."""
        state = {k: v for k, v in load_resnet_weights(path).items() if not k.startswith(("layer4.", "fc."))}
        # Caffe-converted files may lack num_batches_tracked; anything else missing means a wrong file
        missing = [k for k in self.state_dict() if k not in state and not k.endswith("num_batches_tracked")]
        if missing:
            raise CheckpointError(f"{path}: stem + layer1-3 weights missing: [{summarize_keys(missing)}] (is "
                                  f"NETWORK.IMAGE_NUM_LAYERS right for this file?)")
        load_state_dict_with_report(self, state, source=f"{path} [stem + layer1-3]", allow_unexpected=False)

    def load_pretrained_from_config(self, cfg: Any) -> None:
        net = cfg.NETWORK
        if not net.IMAGE_PRETRAINED:
            log.warning("NETWORK.IMAGE_PRETRAINED is empty: the ResNet keeps its random initialisation")
            return
        self.load_weights(resolve_resnet_weights_path(net.IMAGE_PRETRAINED, net.IMAGE_PRETRAINED_EPOCH))


def build_feature_backbone(cfg: Any) -> nn.Module:
    """NETWORK.BACKBONE: `resnet` -> ResNetC4, anything else -> TimmBackbone (a timm model name)."""
    if cfg.NETWORK.BACKBONE == BUILTIN_RESNET:
        return ResNetC4.from_config(cfg)
    return TimmBackbone.from_config(cfg)
