"""A stand-in for pretrained ViT weights in the toy world: a small timm ViT trained on toy scenes to name the shape
and colour of each object and to tell which shapes and colours a scene holds, so that its RoI features, grid cells,
patch tokens and class token all carry what the toy tasks ask.

It reads freshly sampled toy scenes (never the files of a generated world, so no split leaks), resized and
normalised as the tasks read images (SCALES 144 / 240, the ViT's PIXEL_MEANS / PIXEL_STDS), through `TimmBackbone`
(RGB order, padding) exactly as the front-ends run it. Three heads, one per way the front-ends read the ViT:

- each object's shape and colour from its box under RoIAlign (the `regions` front-end's pooling);
- which shapes and colours the scene holds from the mean of the patch tokens (what a whole-image box or the mean of
  the cells sums up);
- the same from the class token (the `patches` front-end's whole-image token).

Objects are placed anywhere, not on the 16-pixel patch grid, so what the ViT learns holds for boxes of the scenes
(a ViT trained on grid-aligned crops names shapes much worse off the grid). The weights are written in timm's layout:

    python data/toy_vit.py --out model/pretrained_model/vit-toy.pth      # ~4 CPU minutes

then NETWORK.BACKBONE vit_tiny_patch16_224, NETWORK.BACKBONE_ARGS, PIXEL_MEANS and PIXEL_STDS as printed (the
statistics of timm's ViT weights), NETWORK.IMAGE_PRETRAINED the file.
"""
import argparse
import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.data.transforms import resize, to_normalized_tensor
from common.engine.checkpoint import save_atomic
from common.model.fast_rcnn import pool_rois
from common.model.timm_backbone import FEATURE_STRIDE, TimmBackbone, parse_backbone_args, pixel_statistics
from data.shape_world.generate import WORLD_SIZES
from data.shape_world.vocab import COLOUR_NAMES, SHAPE_NAMES
from data.shape_world.world import render, sample_scene
from data.toy_backbone import HEADS, head_losses, train_steps

log = logging.getLogger("data.toy_vit")
ARCH = "vit_tiny_patch16_224"
ARGS = ("depth=4", "embed_dim=128", "num_heads=4", "img_size=192")  # NETWORK.BACKBONE_ARGS of the toy configs
MIN_SIZE, MAX_SIZE = 144, 240  # SCALES of the toy configs
NUM_LABELS = sum(width for _, width in HEADS)


def scene_batch(rng: np.random.Generator, count: int, means: list[float],
                stds: list[float]) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """`count` new scenes of one image size, as the tasks read them: images [count, 3, H, W] (BGR, the ViT's pixel
    statistics), per scene its object boxes [n, 4] in the resized image and their labels [n, 2] (shape, colour)."""
    sizes = WORLD_SIZES["demo"].image_sizes
    width, height = sizes[int(rng.integers(len(sizes)))]
    images, boxes, labels = [], [], []
    for _ in range(count):
        scene = sample_scene(rng, width, height)
        picture, scaled, _ = resize(render(scene), torch.tensor([o.box for o in scene.objects], dtype=torch.float32),
                                    MIN_SIZE, MAX_SIZE)
        images.append(to_normalized_tensor(picture, means, stds))
        boxes.append(scaled)
        labels.append(torch.tensor([[SHAPE_NAMES.index(o.shape), COLOUR_NAMES.index(o.colour)]
                                    for o in scene.objects]))
    return torch.stack(images), boxes, labels


def presence_targets(labels: list[torch.Tensor]) -> torch.Tensor:
    """Per scene [n, 2] object labels -> [count, NUM_LABELS] multi-hot: which shapes and colours the scene holds."""
    out = torch.zeros(len(labels), NUM_LABELS)
    for i, scene in enumerate(labels):
        out[i, scene[:, 0]] = 1
        out[i, HEADS[0][1] + scene[:, 1]] = 1
    return out


class ToyViTTrainer(nn.Module):
    """The backbone and its three heads: objects from their RoIs, presence from the mean patch and the class token."""

    def __init__(self, backbone: TimmBackbone):
        super().__init__()
        self.backbone = backbone
        self.object_head = nn.Linear(backbone.out_channels, NUM_LABELS)
        self.mean_presence_head = nn.Linear(backbone.out_channels, NUM_LABELS)
        self.class_presence_head = nn.Linear(backbone.out_channels, NUM_LABELS)

    def forward(self, images: torch.Tensor,
                boxes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> object logits [sum n, NUM_LABELS], presence logits from the mean patch and from the class token
        [count, NUM_LABELS]."""
        fmap, class_token = self.backbone.tokens(images)
        rois = pool_rois(fmap, boxes).mean(dim=(2, 3))  # what the regions front-end reads of a timm map
        return (self.object_head(rois), self.mean_presence_head(fmap.mean(dim=(2, 3))),
                self.class_presence_head(class_token))


def step_loss(model: ToyViTTrainer, images: torch.Tensor, boxes: list[torch.Tensor],
              labels: list[torch.Tensor]) -> tuple[torch.Tensor, list[float]]:
    """Objects' shape and colour cross-entropies plus both presence losses; accuracies per object head."""
    object_logits, mean_presence, class_presence = model(images, boxes)
    loss, accuracies = head_losses(object_logits, torch.cat(labels))
    targets = presence_targets(labels)
    loss = (loss + F.binary_cross_entropy_with_logits(mean_presence, targets)
            + F.binary_cross_entropy_with_logits(class_presence, targets))
    return loss, accuracies


def train(out: str, steps: int = 1200, batch: int = 8, seed: int = 0, lr: float = 2e-3,
          held_out: int = 64) -> dict[str, float]:
    """Train and write the trunk's weights to `out` (atomically); returns the per-object accuracy per head on the
    objects of `held_out` new scenes."""
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 9300])
    backbone = TimmBackbone(ARCH, parse_backbone_args(ARGS), frozen_stages=())
    model = ToyViTTrainer(backbone)
    means, stds = pixel_statistics(backbone)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    train_steps(model, optimizer, lr, steps, lambda step: step_loss(model, *scene_batch(rng, batch, means, stds)))
    held_out_rng = np.random.default_rng([seed, 9400])
    correct, total = torch.zeros(len(HEADS)), 0
    with torch.no_grad():
        for _ in range(0, held_out, batch):
            images, boxes, labels = scene_batch(held_out_rng, batch, means, stds)
            _, accuracies = step_loss(model, images, boxes, labels)
            count = sum(len(scene) for scene in labels)
            correct += torch.tensor(accuracies) * count
            total += count
    result = {name: float(c / total) for (name, _), c in zip(HEADS, correct, strict=True)}
    log.info("held-out accuracy per object (%d objects): %s", total,
             ", ".join(f"{k} {v:.3f}" for k, v in result.items()))
    save_atomic(backbone.trunk.state_dict(), out)
    log.info("wrote %s: NETWORK.BACKBONE %s, NETWORK.BACKBONE_ARGS %s, NETWORK.IMAGE_PRETRAINED %s, "
             "NETWORK.PIXEL_MEANS %s, NETWORK.PIXEL_STDS %s (stride %d)", out, ARCH, list(ARGS), out, means, stds,
             FEATURE_STRIDE)
    return result


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="model/pretrained_model/vit-toy.pth", help="weights file to write")
    parser.add_argument("--steps", type=int, default=1200, help="training steps")
    parser.add_argument("--batch", type=int, default=8, help="scenes per step")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return train(args.out, steps=args.steps, batch=args.batch, seed=args.seed)


if __name__ == "__main__":
    main()
