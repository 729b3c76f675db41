"""A `timm` model as the visual backbone (NETWORK.BACKBONE): its stride-16 feature map (RoIAlign, grid cells) or a
ViT's patch and prefix tokens, built with pretrained=False and filled from a local file in timm's own key layout.

The trunk sits at `trunk.*` (as in open_clip's timm vision tower), so checkpoint keys are
`image_feature_extractor.backbone.trunk.<timm key>`. docs/VISUAL_FRONTENDS.md says how to put weights in place.
"""
from __future__ import annotations

import difflib
import inspect
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.model.resnet import freeze_batchnorm_params, resolve_resnet_weights_path, set_batchnorm_eval
from common.model.state_dict_io import (
    CheckpointError,
    load_state_dict_with_report,
    read_checkpoint_file,
    summarize_keys,
)
from common.yaml_io import load_yaml_text

log = logging.getLogger(__name__)

FEATURE_STRIDE = 16
BUILTIN_RESNET = "resnet"  # NETWORK.BACKBONE's default: the original's ResNet (common/model/resnet.py)
WRAPPERS = ("state_dict", "model", "state_dict_ema")


def parse_backbone_args(entries: Iterable[str]) -> dict[str, Any]:
    """NETWORK.BACKBONE_ARGS ["depth=4", "drop_path_rate=0.1"] -> {"depth": 4, "drop_path_rate": 0.1} (YAML values)."""
    kwargs = {}
    for entry in entries:
        name, sep, text = str(entry).partition("=")
        if not sep or not name.strip().isidentifier():
            raise ValueError(f"NETWORK.BACKBONE_ARGS: expected 'name=value' entries, found {entry!r}")
        kwargs[name.strip()] = load_yaml_text(text, source=f"NETWORK.BACKBONE_ARGS {entry!r}")
    return kwargs


def create_trunk(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """timm.create_model(name, pretrained=False, num_classes=0); ViT-like models get dynamic_img_size (any image size,
    position embeddings interpolated) unless BACKBONE_ARGS says otherwise. Never downloads."""
    import timm  # imported here: runs of the original ResNet do not pay for it

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise ValueError(f"NETWORK.BACKBONE {name!r} is neither {BUILTIN_RESNET!r} (the original ResNet) nor a timm "
                         f"model name; close timm names: {close}")
    kwargs = {"pretrained": False, "num_classes": 0, **kwargs}
    if "dynamic_img_size" not in kwargs:
        try:
            return timm.create_model(name, dynamic_img_size=True, **kwargs)
        except TypeError as err:  # CNNs take any size and have no such argument
            if "dynamic_img_size" not in str(err):
                raise
    return timm.create_model(name, **kwargs)


def stride16_index(trunk: nn.Module, name: str) -> int:
    """Index (in `feature_info`) of the last feature map at stride 16."""
    info = list(trunk.feature_info)
    found = [i for i, f in enumerate(info) if int(f["reduction"]) == FEATURE_STRIDE]
    if not found or not hasattr(trunk, "forward_intermediates"):
        raise ValueError(f"NETWORK.BACKBONE {name!r}: no stride-{FEATURE_STRIDE} feature map through "
                         f"forward_intermediates (feature reductions {[f['reduction'] for f in info]})")
    return found[-1]


class TimmBackbone(nn.Module):
    """images [B, 3, H, W] (the batch's BGR, normalised) -> stride-16 map [B, C, ceil(H/16), ceil(W/16)].

    The trunk sees RGB (timm's convention): channels are reversed, and the image is zero-padded (the mean pixel)
    bottom/right to a multiple of 16. Stages after the stride-16 map and the classifier are pruned away.
    Stage k of IMAGE_FROZEN_BACKBONE_STAGES is the k-th of timm's coarse parameter groups (1 = stem; then then
    the stages of a CNN or Swin, the blocks of a ViT); frozen_bn keeps BatchNorm layers in eval mode with frozen
    affine parameters (LayerNorm has no batch statistics: it trains with its stage).
    """

    def __init__(self, name: str, kwargs: Mapping[str, Any] | None = None, frozen_stages: Iterable[int] = (),
                 frozen_bn: bool = True, channels_last: bool = False):
        super().__init__()
        self.name = name
        self.trunk = create_trunk(name, dict(kwargs or {}))
        self.full_keys = frozenset(self.trunk.state_dict())  # what a complete weights file of this model holds
        self.classifier = self.trunk.pretrained_cfg.get("classifier") or "head"
        index = stride16_index(self.trunk, name)
        info = list(self.trunk.feature_info)
        self.feature_index = index
        self.final_norm = index == len(info) - 1  # a ViT's last block: apply the norm its head read
        self.trunk.prune_intermediate_layers([index], prune_norm=not self.final_norm, prune_head=True)
        self.out_channels = int(info[index]["num_chs"])
        self.num_prefix_tokens = int(getattr(self.trunk, "num_prefix_tokens", 0))
        self.has_class_token = getattr(self.trunk, "cls_token", None) is not None
        self.has_tokens = "return_prefix_tokens" in inspect.signature(self.trunk.forward_intermediates).parameters
        # plain list (not registered twice): the modules FSDP may wrap one by one, in forward order
        self.stages = [m for m in (self.trunk.get_submodule(f["module"]) for f in info[:index + 1])
                       if any(True for _ in m.parameters())]
        self.frozen_bn = frozen_bn
        self.channels_last = channels_last
        self.freeze(frozen_stages)
        if channels_last:
            self.trunk.to(memory_format=torch.channels_last)

    @classmethod
    def from_config(cls, cfg: Any) -> TimmBackbone:
        """NETWORK.BACKBONE, BACKBONE_ARGS, IMAGE_FROZEN_BACKBONE_STAGES, IMAGE_FROZEN_BN, IMAGE_CHANNELS_LAST."""
        net = cfg.NETWORK
        backbone = cls(net.BACKBONE, parse_backbone_args(net.BACKBONE_ARGS), net.IMAGE_FROZEN_BACKBONE_STAGES,
                       bool(net.IMAGE_FROZEN_BN), bool(net.IMAGE_CHANNELS_LAST))
        check_rgb_statistics(backbone, net.get("PIXEL_MEANS", ()), net.get("PIXEL_STDS", ()))
        return backbone

    # ---- parameter groups -------------------------------------------------------------------------------------
    def parameter_groups(self, coarse: bool) -> list[list[str]]:
        """timm's own grouping of the trunk's parameters, stem first (names relative to this module)."""
        from timm.models import group_parameters

        groups = group_parameters(self.trunk, self.trunk.group_matcher(coarse=coarse))
        return [[f"trunk.{n}" for n in groups[g]] for g in sorted(groups)]

    def freeze(self, stages: Iterable[int]) -> None:
        groups = self.parameter_groups(coarse=True)
        stages = tuple(int(s) for s in stages)
        bad = [s for s in stages if not 1 <= s <= len(groups)]
        if bad:
            raise ValueError(f"NETWORK.IMAGE_FROZEN_BACKBONE_STAGES: {self.name} has stages 1 (stem) .. "
                             f"{len(groups)}; found {bad}")
        params = dict(self.named_parameters())
        for stage in stages:
            for name in groups[stage - 1]:
                params[name].requires_grad_(False)
        if self.frozen_bn:
            freeze_batchnorm_params(self)

    def lr_layer_ids(self) -> dict[str, tuple[int, int]]:
        """Parameter name -> (layer, number of layers) for TRAIN.VISUAL_LR_DECAY: timm's fine groups, stem = 0."""
        groups = self.parameter_groups(coarse=False)
        return {name: (layer, len(groups)) for layer, names in enumerate(groups) for name in names}

    def train(self, mode: bool = True) -> TimmBackbone:
        super().train(mode)
        if self.frozen_bn:
            set_batchnorm_eval(self)
        return self

    # ---- weights ----------------------------------------------------------------------------------------------
    def load_weights(self, path: str) -> None:
        """Load a timm state dict (the full model's: classifier and pruned stages are skipped).

        A key the trunk needs that the file lacks, or a file key this model does not have, is an error that names
        the file and both lists, so a misnamed key shows up as one missing and one unexpected entry.
        """
        state = read_checkpoint_file(path, hint="Put the timm weights file there (docs/VISUAL_FRONTENDS.md); "
                                                "nothing is downloaded.")
        for wrapper in WRAPPERS:
            if wrapper in state and isinstance(state[wrapper], Mapping):
                state = dict(state[wrapper])
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
        own = self.trunk.state_dict()
        missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
        is_classifier = [k.startswith(f"{self.classifier}.") or k == self.classifier for k in state]
        unexpected = [k for k, head in zip(state, is_classifier, strict=True) if k not in self.full_keys and not head]
        if missing or unexpected:
            raise CheckpointError(
                f"{path}: the weights do not fit timm model {self.name!r} (NETWORK.BACKBONE, NETWORK.IMAGE_PRETRAINED)"
                f"; missing keys: [{summarize_keys(missing)}]; unexpected keys: [{summarize_keys(unexpected)}]; "
                f"expected keys (timm layout): [{summarize_keys(own, limit=6)}]")
        kept = {k: v for k, v in state.items() if k in own}
        load_state_dict_with_report(self.trunk, kept, source=f"{path} [timm {self.name}]")
        skipped = len(state) - len(kept)
        if skipped:
            log.info("%s: %d tensors of the classifier and of the stages after stride %d not used", path, skipped,
                     FEATURE_STRIDE)

    def load_pretrained_from_config(self, cfg: Any) -> None:
        """NETWORK.IMAGE_PRETRAINED (a file; or the original's `{prefix}-{IMAGE_PRETRAINED_EPOCH:04d}.model`)."""
        net = cfg.NETWORK
        if not net.IMAGE_PRETRAINED:
            log.warning("NETWORK.IMAGE_PRETRAINED is empty: timm %s keeps its random initialisation", self.name)
            return
        self.load_weights(resolve_resnet_weights_path(net.IMAGE_PRETRAINED, net.IMAGE_PRETRAINED_EPOCH))

    # ---- forward ----------------------------------------------------------------------------------------------
    def prepare(self, images: Tensor) -> Tensor:
        """BGR -> RGB, zero-padded bottom/right to a multiple of the stride."""
        images = images.flip(1)
        pad_h, pad_w = (-images.shape[2]) % FEATURE_STRIDE, (-images.shape[3]) % FEATURE_STRIDE
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h))
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def forward(self, images: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, C, H/16, W/16] (rounded up)."""
        (fmap,) = self.trunk.forward_intermediates(self.prepare(images), indices=[self.feature_index],
                                                   norm=self.final_norm, intermediates_only=True)
        return fmap

    def tokens(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """A ViT's last-layer tokens: patches as a map [B, C, H/16, W/16] and the class token [B, C] (None without)."""
        if not self.has_tokens:
            raise ValueError(f"NETWORK.BACKBONE {self.name!r} has no patch tokens")
        ((fmap, prefix),) = self.trunk.forward_intermediates(
            self.prepare(images), indices=[self.feature_index], norm=self.final_norm, return_prefix_tokens=True,
            intermediates_only=True)
        return fmap, (prefix[:, 0] if self.has_class_token else None)  # the class token comes first


def pixel_statistics(backbone: TimmBackbone) -> tuple[list[float], list[float]]:
    """The NETWORK.PIXEL_MEANS / PIXEL_STDS (B, G, R on the 0-255 scale) of the timm model's published weights."""
    cfg = backbone.trunk.pretrained_cfg
    return ([round(255 * v, 3) for v in reversed(cfg.get("mean", ()))],
            [round(255 * v, 3) for v in reversed(cfg.get("std", ()))])


def check_rgb_statistics(backbone: TimmBackbone, means: Sequence[float], stds: Sequence[float]) -> None:
    """Say once when NETWORK.PIXEL_MEANS / PIXEL_STDS differ from what the timm model's own weights expect."""
    want_means, want_stds = pixel_statistics(backbone)
    if [round(float(v), 3) for v in means] != want_means or [round(float(v), 3) for v in stds] != want_stds:
        log.info("timm %s: weights published for it expect NETWORK.PIXEL_MEANS %s and PIXEL_STDS %s (B, G, R on the "
                 "0-255 scale); this config has %s / %s (fine for weights trained that way)",
                 backbone.name, want_means, want_stds, list(means), list(stds))
