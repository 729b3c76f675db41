"""Linear probe of grid cells: can an object's colour and shape be read from the one cell at its box centre?

Renders fresh toy scenes (never a generated world's files), resizes them as a VQA config does (SCALES), runs the
config's frozen backbone and GRID_POOL, takes the cell under each object's box centre, and fits a multinomial logistic
regression on 70 % of the objects; prints held-out accuracy against the majority class (docs/VISUAL_FRONTENDS.md):

    python bench/grid_cell_probe.py --weights model/pretrained_model/resnet18-toy.pth
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from common.config import load_config
from common.data.transforms import resize, to_normalized_tensor
from common.model.grid_cells import GridCells
from data.shape_world.generate import WORLD_SIZES
from data.shape_world.vocab import COLOUR_NAMES, SHAPE_NAMES
from data.shape_world.world import render, sample_scene
from vqa.config import add_vqa_defaults


def centre_cells(cfg, scenes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, C] of the cell under each object's box centre, labels [N, 2] = colour, shape indices)."""
    grid = GridCells.from_config(cfg)  # the grid front-end itself: its backbone, GRID_POOL and cell stride
    grid.load_pretrained_from_config(cfg)
    grid.eval()
    min_size, max_size = int(cfg.SCALES[0]), int(cfg.SCALES[1])
    rng, sizes = np.random.default_rng(seed), WORLD_SIZES["demo"].image_sizes
    features, labels = [], []
    with torch.no_grad():
        for _ in range(scenes):
            width, height = sizes[int(rng.integers(len(sizes)))]
            scene = sample_scene(rng, width, height)
            boxes = torch.tensor([obj.box for obj in scene.objects], dtype=torch.float32)
            image, boxes, _ = resize(render(scene), boxes, min_size, max_size)
            fmap, _, stride = grid.cell_features(to_normalized_tensor(image)[None])
            for obj, box in zip(scene.objects, boxes.tolist(), strict=True):
                col = min(int((box[0] + box[2]) / 2 // stride), fmap.shape[3] - 1)
                row = min(int((box[1] + box[3]) / 2 // stride), fmap.shape[2] - 1)
                features.append(fmap[0, :, row, col])
                labels.append([COLOUR_NAMES.index(obj.colour), SHAPE_NAMES.index(obj.shape)])
    return torch.stack(features), torch.tensor(labels)


def probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                   classes: int, steps: int = 500) -> float:
    """Held-out accuracy of a softmax regression (standardised inputs, L2 1e-3, full-batch L-BFGS)."""
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    linear = torch.nn.Linear(train_x.shape[1], classes)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(train_x), train_y) + 1e-3 * linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float((linear(test_x).argmax(1) == test_y).float().mean())


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", default="cfgs/vqa/toy_cpu_grid.yaml")
    parser.add_argument("--weights", required=True, help="NETWORK.IMAGE_PRETRAINED (make toy-backbone)")
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args, overrides = parser.parse_known_args(argv)
    cfg = load_config(args.cfg, ["NETWORK.IMAGE_PRETRAINED", args.weights, *overrides],
                      add_task_defaults=add_vqa_defaults)
    torch.manual_seed(args.seed)
    x, y = centre_cells(cfg, args.scenes, args.seed)
    cut = int(0.7 * len(x))
    result = {}
    for k, (name, vocab) in enumerate((("colour", COLOUR_NAMES), ("shape", SHAPE_NAMES))):
        accuracy = probe_accuracy(x[:cut], y[:cut, k], x[cut:], y[cut:, k], len(vocab))
        majority = float(torch.bincount(y[cut:, k], minlength=len(vocab)).max()) / (len(x) - cut)
        result[name] = (accuracy, majority)
        print(f"{name}: probe accuracy {accuracy:.3f}, majority {majority:.3f} ({len(x) - cut} held-out objects of "
              f"{len(x)}, {x.shape[1]}-d cells)")
    return result


if __name__ == "__main__":
    main()
