"""A stand-in for ImageNet weights in the toy world: a ResNet trained to name the shape and colour of toy objects.

The end-to-end configs of the real tasks start from an ImageNet-trained ResNet (NETWORK.IMAGE_PRETRAINED). Nothing
can be downloaded here, and a randomly initialised ResNet gives region features in which colour and shape are
faint, so a toy run that computes features end to end has little to learn from. This script trains a torchvision
ResNet on crops of freshly sampled toy scenes (never the files of a generated world, so no split leaks) and writes
its state dict in the torchvision layout that NETWORK.IMAGE_PRETRAINED reads:

    python data/toy_backbone.py --out model/pretrained_model/resnet18-toy.pth      # ~3 CPU minutes

The images go through the same preprocessing as the tasks' (BGR, 0-255, Caffe means, `to_normalized_tensor`).
"""
import argparse
import logging
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from common.data.transforms import to_normalized_tensor
from common.engine.checkpoint import save_atomic
from data.shape_world.generate import WORLD_SIZES
from data.shape_world.vocab import COLOUR_NAMES, SHAPE_NAMES
from data.shape_world.world import render, sample_scene

log = logging.getLogger("data.toy_backbone")
# Size is not a head: a crop resized to CROP x CROP no longer shows it (VL-BERT reads it from the box geometry).
HEADS = (("shape", len(SHAPE_NAMES)), ("colour", len(COLOUR_NAMES)))
CROP = 64


def crop_batch(rng: np.random.Generator, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` object crops (with some context around the box) from new scenes: [count, 3, CROP, CROP] images and
    [count, 2] labels (shape and colour indices)."""
    sizes = WORLD_SIZES["demo"].image_sizes
    images, labels = [], []
    while len(images) < count:
        width, height = sizes[int(rng.integers(len(sizes)))]
        scene = sample_scene(rng, width, height)
        picture = render(scene)
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            pad_x, pad_y = rng.uniform(0.05, 0.4) * (x1 - x0 + 1), rng.uniform(0.05, 0.4) * (y1 - y0 + 1)
            box = (max(0, int(x0 - pad_x)), max(0, int(y0 - pad_y)), min(width, int(x1 + pad_x) + 1),
                   min(height, int(y1 + pad_y) + 1))
            images.append(to_normalized_tensor(picture.crop(box).resize((CROP, CROP))))
            labels.append([SHAPE_NAMES.index(obj.shape), COLOUR_NAMES.index(obj.colour)])
    return torch.stack(images[:count]), torch.tensor(labels[:count])


def head_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """Sum of the heads' cross-entropies and the accuracy of each head."""
    loss, accuracies, start = logits.new_zeros(()), [], 0
    for k, (_, width) in enumerate(HEADS):
        part = logits[:, start:start + width]
        loss = loss + F.cross_entropy(part, labels[:, k])
        accuracies.append(float((part.argmax(1) == labels[:, k]).float().mean()))
        start += width
    return loss, accuracies


def build_resnet(num_layers: int) -> torch.nn.Module:
    builders = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34, 50: torchvision.models.resnet50,
                101: torchvision.models.resnet101}
    if num_layers not in builders:
        raise ValueError(f"--layers {num_layers}: choose one of {sorted(builders)} (NETWORK.IMAGE_NUM_LAYERS)")
    return builders[num_layers](weights=None, num_classes=sum(width for _, width in HEADS))


def train_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, lr: float, steps: int,
                batch_loss: Callable[[int], tuple[torch.Tensor, list[float]]]) -> None:
    """`steps` optimizer steps under a one-cycle schedule peaking at `lr` (10 % warm-up), progress logged every 50;
    batch_loss(step) -> (loss, [shape accuracy, colour accuracy]) of a fresh batch. Leaves the model in eval mode."""
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    start = time.time()
    model.train()
    for step in range(steps):
        loss, accuracies = batch_loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            log.info("step %d/%d loss %.3f accuracy shape %.2f colour %.2f (%.0f s)", step + 1, steps, loss.item(),
                     *accuracies, time.time() - start)
    model.eval()


def train(out: str, num_layers: int = 18, steps: int = 500, batch: int = 64, seed: int = 0,
          lr: float = 1e-3, held_out: int = 512) -> dict[str, float]:
    """Train and write the weights to `out` (atomically); returns the accuracy per head on `held_out` new crops."""
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 9100])
    model = build_resnet(num_layers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)

    def batch_loss(step: int) -> tuple[torch.Tensor, list[float]]:
        images, labels = crop_batch(rng, batch)
        return head_losses(model(images), labels)

    train_steps(model, optimizer, lr, steps, batch_loss)
    held_out_rng = np.random.default_rng([seed, 9200])
    with torch.no_grad():
        images, labels = crop_batch(held_out_rng, held_out)
        _, accuracies = head_losses(model(images), labels)
    result = {name: acc for (name, _), acc in zip(HEADS, accuracies, strict=True)}
    log.info("held-out accuracy: %s", ", ".join(f"{k} {v:.3f}" for k, v in result.items()))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    save_atomic(state, out)  # creates the folder
    log.info("wrote %s: set NETWORK.IMAGE_PRETRAINED to it (and NETWORK.IMAGE_NUM_LAYERS %d)", out, num_layers)
    return result


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="model/pretrained_model/resnet18-toy.pth", help="weights file to write")
    parser.add_argument("--layers", type=int, default=18, help="ResNet depth (NETWORK.IMAGE_NUM_LAYERS)")
    parser.add_argument("--steps", type=int, default=500, help="training steps")
    parser.add_argument("--batch", type=int, default=64, help="crops per step")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return train(args.out, num_layers=args.layers, steps=args.steps, batch=args.batch, seed=args.seed)


if __name__ == "__main__":
    main()
