"""ResNet backbone with torchvision parameter names plus the options VL-BERT needs.

Options: stride in the 1x1 conv (MSRA/Caffe style), per-stage dilation, frozen stages, frozen BatchNorm and
channels-last memory format. Weights are read from local files only (see PREPARE_PRETRAINED_MODELS.md).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from common.model.state_dict_io import CheckpointError, read_checkpoint_file

log = logging.getLogger(__name__)

PREPARE_DOC = "model/pretrained_model/PREPARE_PRETRAINED_MODELS.md"
STAGE_PLANES = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34). `stride_in_1x1` has no meaning here and is ignored."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, stride_in_1x1: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (dilated, padding = dilation) -> 1x1; the stride sits on the 1x1 when `stride_in_1x1`."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, stride_in_1x1: bool = False):
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride_1x1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride_3x3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


# depth -> (block, blocks per stage)
RESNET_SPECS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def resnet_spec(num_layers: int) -> tuple[type[nn.Module], tuple[int, int, int, int]]:
    if num_layers not in RESNET_SPECS:
        raise ValueError(f"NETWORK.IMAGE_NUM_LAYERS must be one of {sorted(RESNET_SPECS)}, found {num_layers}")
    return RESNET_SPECS[num_layers]


def make_stage(block: type[nn.Module], inplanes: int, planes: int, blocks: int, stride: int = 1,
               dilation: int = 1, stride_in_1x1: bool = False) -> nn.Sequential:
    """One ResNet stage (torchvision `layerN`): block 0 strides and owns `downsample.0/1` (1x1 conv + BN)."""
    out = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
    layers = [block(inplanes, planes, stride, dilation, downsample, stride_in_1x1)]
    layers += [block(out, planes, 1, dilation, None, stride_in_1x1) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def init_resnet_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan_out) convs, BN weight 1 / bias 0, as torchvision."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def freeze_batchnorm_params(module: nn.Module) -> None:
    """requires_grad=False on every BatchNorm weight/bias inside `module`."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for p in m.parameters():
                p.requires_grad_(False)


def set_batchnorm_eval(module: nn.Module) -> None:
    """Put every BatchNorm inside `module` in eval mode (running statistics used, never updated)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def check_frozen_stages(stages: Iterable[int]) -> tuple[int, ...]:
    stages = tuple(int(s) for s in stages)
    bad = [s for s in stages if s < 1 or s > 5]
    if bad:
        raise ValueError(f"NETWORK.IMAGE_FROZEN_BACKBONE_STAGES: stages are 1 (conv1+bn1) .. 5 (C5); found {bad}")
    return stages


class ResNet(nn.Module):
    """Stem (`conv1`, `bn1`, maxpool) + `layer1..layerK`, K = len(layers) <= 4; forward returns the last stage.

    x [B, 3, H, W] -> [B, C, H/s, W/s] with s = 4 * 2^(K-1) / (product of dilations that replaced strides).
    `dilations[i] == 2` sets stage i's stride to 1 (a dilated C5 keeps stride 16).
    """

    def __init__(self, block: type[nn.Module], layers: Sequence[int], stride_in_1x1: bool = False,
                 dilations: Sequence[int] = (1, 1, 1, 1), frozen_stages: Iterable[int] = (),
                 frozen_bn: bool = False, channels_last: bool = False):
        super().__init__()
        if not 1 <= len(layers) <= 4:
            raise ValueError(f"ResNet needs 1..4 stages, found {len(layers)}")
        self.frozen_bn = frozen_bn
        self.channels_last = channels_last
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for i, blocks in enumerate(layers):
            stride = 1 if i == 0 or dilations[i] > 1 else 2
            stage = make_stage(block, inplanes, STAGE_PLANES[i], blocks, stride, dilations[i], stride_in_1x1)
            self.add_module(f"layer{i + 1}", stage)
            inplanes = STAGE_PLANES[i] * block.expansion
        self.num_stages = len(layers)
        self.out_channels = inplanes
        init_resnet_weights(self)
        self.freeze(frozen_stages, frozen_bn)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @classmethod
    def from_config(cls, cfg, num_stages: int = 4) -> ResNet:
        """Reads NETWORK.IMAGE_NUM_LAYERS / IMAGE_STRIDE_IN_1x1 / IMAGE_C5_DILATED / IMAGE_FROZEN_* keys."""
        net = cfg.NETWORK
        block, layers = resnet_spec(net.IMAGE_NUM_LAYERS)
        return cls(block, layers[:num_stages], stride_in_1x1=net.IMAGE_STRIDE_IN_1x1,
                   dilations=(1, 1, 1, 2 if net.IMAGE_C5_DILATED else 1),
                   frozen_stages=net.IMAGE_FROZEN_BACKBONE_STAGES, frozen_bn=net.IMAGE_FROZEN_BN,
                   channels_last=bool(getattr(net, "IMAGE_CHANNELS_LAST", False)))

    def stage_modules(self, stage: int) -> list[nn.Module]:
        """Stage 1 = conv1 + bn1, stage k = layer{k-1}; an absent stage gives []."""
        if stage == 1:
            return [self.conv1, self.bn1]
        return [getattr(self, f"layer{stage - 1}")] if stage - 1 <= self.num_stages else []

    def freeze(self, stages: Iterable[int], frozen_bn: bool) -> None:
        for stage in check_frozen_stages(stages):
            for m in self.stage_modules(stage):
                m.requires_grad_(False)
        if frozen_bn:
            freeze_batchnorm_params(self)

    def train(self, mode: bool = True) -> ResNet:
        super().train(mode)
        if self.frozen_bn:
            set_batchnorm_eval(self)
        return self

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x


def resolve_resnet_weights_path(pretrained: str, epoch: int = 0) -> str:
    """The original's `{IMAGE_PRETRAINED}-{IMAGE_PRETRAINED_EPOCH:04d}.model`; an existing file path is used as is."""
    if os.path.isfile(pretrained):
        return pretrained
    return f"{pretrained}-{int(epoch):04d}.model"


def load_resnet_weights(path: str) -> dict[str, Tensor]:
    """Read a flat torchvision-style ResNet state dict (`conv1.weight`, `layer4.2.bn3.running_var`, ...).

    Accepts the converted bottom-up-attention file (`resnet101-pt-vgbua-0000.model`), torchvision checkpoints
    (`resnet101-*.pth`) and safetensors; a `state_dict`/`model` wrapper and `module.` prefixes are removed.
    Never downloads: a missing file raises CheckpointError saying where to put it.
    """
    hint = (f"Put the ResNet weights there (e.g. model/pretrained_model/resnet101-pt-vgbua-0000.model); "
            f"see {PREPARE_DOC}. Nothing is downloaded.")
    state = read_checkpoint_file(path, hint=hint)
    for wrapper in ("state_dict", "model"):
        if wrapper in state and isinstance(state[wrapper], Mapping):
            state = dict(state[wrapper])
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if "conv1.weight" not in state:
        raise CheckpointError(f"{path}: not a torchvision-style ResNet state dict (no key conv1.weight; "
                              f"found e.g. {sorted(state)[:5]})")
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: non-tensor entries {bad[:5]}")
    return state
