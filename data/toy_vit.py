"""A stand-in for pretrained ViT weights in the toy world: a small timm ViT trained to name the shape and colour of
toy objects, patch by patch, so that its patch tokens, grid cells and RoI features all carry what the toy tasks ask.

It reads the object crops of `data/toy_backbone.py` laid out as a mosaic (GRID x GRID crops in one image, some
mosaics shrunk to 3/4 so that objects come at the toy scenes' scale); each crop's label is predicted from the mean of
its patch tokens, and the class token predicts which shapes and colours the mosaic holds. The model runs through
`TimmBackbone` (RGB order, padding) exactly as the front-ends run it, and the weights are written in timm's layout:

    python data/toy_vit.py --out model/pretrained_model/vit-toy.pth      # ~3 CPU minutes

then NETWORK.BACKBONE vit_tiny_patch16_224, NETWORK.BACKBONE_ARGS, PIXEL_MEANS and PIXEL_STDS as printed (the
statistics of timm's ViT weights), NETWORK.IMAGE_PRETRAINED the file.
"""
import argparse
import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.data.transforms import CAFFE_PIXEL_MEANS
from common.engine.checkpoint import save_atomic
from common.model.timm_backbone import FEATURE_STRIDE, TimmBackbone, parse_backbone_args, pixel_statistics
from data.toy_backbone import CROP, HEADS, crop_batch, head_losses, train_steps

log = logging.getLogger("data.toy_vit")
ARCH = "vit_tiny_patch16_224"
ARGS = ("depth=4", "embed_dim=128", "num_heads=4", "img_size=192")  # NETWORK.BACKBONE_ARGS of the toy configs
GRID = 3  # crops per mosaic side: 3 x 64 = 192 pixels = 12 x 12 patches
NUM_LABELS = sum(width for _, width in HEADS)


def mosaic_batch(rng: np.random.Generator, count: int, small: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` mosaics [count, 3, S, S] of GRID x GRID crops (S = 192, or 144 when `small`) and their crop labels
    [count, GRID, GRID, 2] (shape, colour)."""
    crops, labels = crop_batch(rng, count * GRID * GRID)
    tile = CROP * 3 // 4 if small else CROP
    if small:
        crops = F.interpolate(crops, size=(tile, tile), mode="bilinear", align_corners=False, antialias=True)
    rows = crops.view(count, GRID, GRID, 3, tile, tile).permute(0, 3, 1, 4, 2, 5)
    return rows.reshape(count, 3, GRID * tile, GRID * tile), labels.view(count, GRID, GRID, 2)


def renormalize(images: torch.Tensor, means: list[float], stds: list[float]) -> torch.Tensor:
    """Crops preprocessed as the toy ResNet's (BGR 0-255 minus the Caffe means) -> the ViT's NETWORK.PIXEL_MEANS /
    PIXEL_STDS (a ViT without BatchNorm after its first layer needs inputs of unit scale)."""
    shift = torch.tensor(CAFFE_PIXEL_MEANS) - torch.tensor(means)
    return (images + shift.view(1, 3, 1, 1)) / torch.tensor(stds).view(1, 3, 1, 1)


class ToyViTTrainer(nn.Module):
    """The backbone, a per-crop head on the mean of each crop's patch tokens and a presence head on the class token."""

    def __init__(self, backbone: TimmBackbone):
        super().__init__()
        self.backbone = backbone
        self.crop_head = nn.Linear(backbone.out_channels, NUM_LABELS)
        self.presence_head = nn.Linear(backbone.out_channels, NUM_LABELS)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> crop logits [B * GRID * GRID, NUM_LABELS] (row-major crops) and presence logits [B, NUM_LABELS]."""
        fmap, class_token = self.backbone.tokens(images)
        per_crop = F.adaptive_avg_pool2d(fmap, GRID).permute(0, 2, 3, 1).reshape(-1, fmap.shape[1])
        return self.crop_head(per_crop), self.presence_head(class_token)


def presence_targets(labels: torch.Tensor) -> torch.Tensor:
    """[B, GRID, GRID, 2] crop labels -> [B, NUM_LABELS] multi-hot: which shapes and colours the mosaic holds."""
    flat = labels.flatten(1, 2)
    shapes = F.one_hot(flat[..., 0], HEADS[0][1]).amax(1)
    colours = F.one_hot(flat[..., 1], HEADS[1][1]).amax(1)
    return torch.cat([shapes, colours], 1).float()


def step_loss(model: ToyViTTrainer, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    crop_logits, presence_logits = model(images)
    loss, accuracies = head_losses(crop_logits, labels.view(-1, 2))
    presence = F.binary_cross_entropy_with_logits(presence_logits, presence_targets(labels))
    return loss + presence, accuracies


def train(out: str, steps: int = 600, batch: int = 8, seed: int = 0, lr: float = 2e-3,
          held_out: int = 32) -> dict[str, float]:
    """Train and write the trunk's weights to `out` (atomically); returns the per-crop accuracy per head on
    `held_out` new mosaics at the toy scenes' scale."""
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 9300])
    backbone = TimmBackbone(ARCH, parse_backbone_args(ARGS), frozen_stages=())
    model = ToyViTTrainer(backbone)
    means, stds = pixel_statistics(backbone)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)

    def batch_loss(step: int) -> tuple[torch.Tensor, list[float]]:
        images, labels = mosaic_batch(rng, batch, small=bool(step % 2))
        return step_loss(model, renormalize(images, means, stds), labels)

    train_steps(model, optimizer, lr, steps, batch_loss)
    with torch.no_grad():
        images, labels = mosaic_batch(np.random.default_rng([seed, 9400]), held_out, small=True)
        _, accuracies = step_loss(model, renormalize(images, means, stds), labels)
    result = {name: acc for (name, _), acc in zip(HEADS, accuracies, strict=True)}
    log.info("held-out accuracy per crop: %s", ", ".join(f"{k} {v:.3f}" for k, v in result.items()))
    save_atomic(backbone.trunk.state_dict(), out)
    log.info("wrote %s: NETWORK.BACKBONE %s, NETWORK.BACKBONE_ARGS %s, NETWORK.IMAGE_PRETRAINED %s, "
             "NETWORK.PIXEL_MEANS %s, NETWORK.PIXEL_STDS %s (stride %d)", out, ARCH, list(ARGS), out, means, stds,
             FEATURE_STRIDE)
    return result


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="model/pretrained_model/vit-toy.pth", help="weights file to write")
    parser.add_argument("--steps", type=int, default=600, help="training steps")
    parser.add_argument("--batch", type=int, default=8, help=f"mosaics per step ({GRID * GRID} crops each)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return train(args.out, steps=args.steps, batch=args.batch, seed=args.seed)


if __name__ == "__main__":
    main()
