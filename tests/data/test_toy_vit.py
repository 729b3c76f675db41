"""data/toy_vit.py: toy scenes read as the tasks read them, heads on what the front-ends read, weights in timm's
layout that the regions front-end loads."""
from __future__ import annotations

import numpy as np
import torch

from common.data.transforms import resized_size
from common.model.fast_rcnn import FastRCNN
from common.model.timm_backbone import TimmBackbone, parse_backbone_args, pixel_statistics
from data import toy_vit
from data.shape_world.generate import WORLD_SIZES
from data.shape_world.vocab import COLOUR_NAMES, COLOURS, SHAPE_NAMES


def test_scenes_come_resized_and_normalised_as_the_tasks_read_them():
    means, stds = [127.5] * 3, [127.5] * 3
    images, boxes, labels = toy_vit.scene_batch(np.random.default_rng(5), 4, means, stds)
    height, width = images.shape[-2:]
    expected = {resized_size(w, h, toy_vit.MIN_SIZE, toy_vit.MAX_SIZE) for w, h in WORLD_SIZES["demo"].image_sizes}
    assert images.shape[0] == 4 and (width, height) in expected
    for image, scene_boxes, scene_labels in zip(images, boxes, labels, strict=True):
        assert scene_boxes.shape == (len(scene_labels), 4) and len(scene_labels) > 0
        assert scene_boxes[:, 2].max() <= width - 1 and scene_boxes[:, 3].max() <= height - 1
        assert float(image.abs().max()) <= 1.0 + 1e-6  # (BGR 0-255 - 127.5) / 127.5
        # the centre of a box (not a person's) shows the object's colour
        for (x0, y0, x1, y1), (shape, colour) in zip(scene_boxes.tolist(), scene_labels.tolist(), strict=True):
            if SHAPE_NAMES[shape] == "person" or x1 - x0 < 8 or y1 - y0 < 8:
                continue
            cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
            rgb = (image[:, cy, cx] * 127.5 + 127.5).flip(0).numpy()
            nearest = min(COLOUR_NAMES, key=lambda name: float(np.abs(np.array(COLOURS[name]) - rgb).sum()))
            assert nearest == COLOUR_NAMES[colour]


def test_presence_targets_are_the_scenes_shapes_and_colours():
    labels = [torch.tensor([[0, 2], [3, 2]]), torch.tensor([[1, 0]])]
    targets = toy_vit.presence_targets(labels)
    shapes = len(SHAPE_NAMES)
    assert targets[0].nonzero().flatten().tolist() == [0, 3, shapes + 2]
    assert targets[1].nonzero().flatten().tolist() == [1, shapes]


def test_object_head_reads_what_the_regions_front_end_pools(tmp_path):
    """The objects' features the toy ViT is trained on are the regions front-end's raw RoI features of those boxes
    (same RoIAlign, same trunk), so what it learns is what `regions` reads."""
    torch.manual_seed(0)
    out = str(tmp_path / "vit-toy.pth")
    accuracy = toy_vit.train(out, steps=2, batch=2, held_out=2)
    assert set(accuracy) == {"shape", "colour"}
    front_end = FastRCNN(final_dim=32, frozen_stages=(), backbone=toy_vit.ARCH,
                         backbone_args=parse_backbone_args(toy_vit.ARGS))
    front_end.load_backbone_weights(out)
    front_end.eval()
    trainer = toy_vit.ToyViTTrainer(TimmBackbone(toy_vit.ARCH, parse_backbone_args(toy_vit.ARGS), frozen_stages=()))
    trainer.backbone.trunk.load_state_dict(torch.load(out, weights_only=True))
    trainer.eval()
    means, stds = pixel_statistics(trainer.backbone)
    images, boxes, _ = toy_vit.scene_batch(np.random.default_rng(1), 2, means, stds)
    captured = {}
    trainer.object_head.register_forward_hook(lambda module, args, output: captured.update(rois=args[0]))
    with torch.no_grad():
        trainer(images, boxes)
        padded = torch.nn.utils.rnn.pad_sequence(boxes, batch_first=True)
        index = torch.cat([torch.stack([torch.full((len(b),), i), torch.arange(len(b))], 1)
                           for i, b in enumerate(boxes)])
        pooled = front_end.raw_features(images, padded, index, None, None)
    torch.testing.assert_close(captured["rois"], pooled)
