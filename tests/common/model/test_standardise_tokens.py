"""NETWORK.STANDARDISE_VISUAL_TOKENS: every front-end's projected tokens standardised per dimension, the whole-image
token with statistics of its own (hand-computed from the projection's output), running statistics at evaluation,
a training batch of one image, buffers only (no new parameters, no keys when off), and the refusal naming the key."""
from __future__ import annotations

import pytest
import torch
from easydict import EasyDict

from common.model import front_ends
from common.model.front_ends import build_visual_front_end
from common.model.standardise import Standardise
from tests.common.model.test_visual_tokens import network_cfg

TINY_VIT = ["embed_dim=32", "depth=2", "num_heads=2"]
IM_INFO = torch.tensor([[96.0, 64.0, 1.0, 1.0], [60.0, 48.0, 1.0, 1.0], [80.0, 64.0, 1.0, 1.0]])
BOXES = torch.full((3, 4, 4), -2.0)  # box 0 of each image is the whole image
BOXES[0, :2] = torch.tensor([[0.0, 0.0, 95.0, 63.0], [10.0, 12.0, 40.0, 50.0]])
BOXES[1, :4] = torch.tensor([[0.0, 0.0, 59.0, 47.0], [5.0, 5.0, 30.0, 30.0], [20.0, 8.0, 58.0, 40.0],
                             [3.0, 30.0, 9.0, 47.0]])
BOXES[2, :3] = torch.tensor([[0.0, 0.0, 79.0, 63.0], [1.0, 2.0, 20.0, 30.0], [40.0, 10.0, 70.0, 60.0]])
EPS = 1e-5  # BatchNorm1d's


def cfg(standardise: bool = True, whole_image: bool = True, **network) -> EasyDict:
    """test_visual_tokens' network keys, precomputed features unless `network` says otherwise, and the dataset key."""
    net = network_cfg(**{"IMAGE_FEAT_PRECOMPUTED": True, **network, "STANDARDISE_VISUAL_TOKENS": standardise}).NETWORK
    return EasyDict(NETWORK=net, DATASET=dict(ADD_IMAGE_AS_A_BOX=whole_image))


FRONT_ENDS = {  # name -> NETWORK changes that pick it
    "precomputed": {},
    "fast_rcnn": dict(IMAGE_FEAT_PRECOMPUTED=False),
    "grid": dict(IMAGE_FEAT_PRECOMPUTED=False, VISUAL_TOKENS="grid"),
    "patches": dict(IMAGE_FEAT_PRECOMPUTED=False, VISUAL_TOKENS="patches", BACKBONE="vit_tiny_patch16_224",
                    BACKBONE_ARGS=TINY_VIT),
}


def precomputed_batch(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return {"boxes": BOXES, "im_info": IM_INFO, "box_features": torch.randn(3, 4, 2048) + 3.0}


def projected(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(obj_reps [B, N, D], the projection's output [K, D] of the same pass, before the standardisation)."""
    seen = {}
    hook = model.obj_downsample.register_forward_hook(lambda module, args, out: seen.update(out=out.clone()))
    try:
        obj_reps = model.encode(batch).obj_reps
    finally:
        hook.remove()
    return obj_reps, seen["out"]


def by_hand(rows: torch.Tensor) -> torch.Tensor:
    return (rows - rows.mean(0)) / torch.sqrt(rows.var(0, unbiased=False) + EPS)


@pytest.mark.parametrize("name", sorted(FRONT_ENDS))
def test_buffers_only_and_no_keys_when_off(name):
    off = build_visual_front_end(cfg(False, **FRONT_ENDS[name]))
    on = build_visual_front_end(cfg(True, **FRONT_ENDS[name]))
    assert front_ends.front_end_name(cfg(**FRONT_ENDS[name])) == name
    assert not any("_norm." in key for key in off.state_dict())  # checkpoints of the original configs unchanged
    assert [n for n, _ in on.named_parameters()] == [n for n, _ in off.named_parameters()]  # same optimizer layout
    norms = {key for key in on.state_dict() if "_norm." in key}
    assert {key.split(".")[0] for key in norms} == {"image_norm", "region_norm"}
    assert isinstance(on.region_norm, Standardise) and isinstance(on.image_norm, Standardise)


def test_training_tokens_are_standardised_with_the_whole_image_apart():
    model = build_visual_front_end(cfg()).train()
    batch = precomputed_batch()
    obj_reps, pre = projected(model, batch)
    mask = BOXES[..., 0] > -1.5
    whole = mask.nonzero()[:, 1] == 0  # row-major valid boxes: box 0 of each image is its whole image
    torch.testing.assert_close(obj_reps[:, 0], by_hand(pre[whole]))
    torch.testing.assert_close(obj_reps[:, 1:][mask[:, 1:]], by_hand(pre[~whole]))
    assert obj_reps[~mask].abs().sum() == 0  # padding stays zero
    # the whole-image statistics are their own: other boxes' features do not move the whole-image tokens
    changed = dict(batch, box_features=batch["box_features"].clone())
    changed["box_features"][:, 1:] *= 5.0
    torch.manual_seed(1)
    first = model.encode(batch).obj_reps[:, 0]
    torch.manual_seed(1)
    torch.testing.assert_close(model.encode(changed).obj_reps[:, 0], first)


def test_without_a_whole_image_box_every_token_shares_one_statistic():
    model = build_visual_front_end(cfg(whole_image=False)).train()
    assert model.image_norm is None
    obj_reps, pre = projected(model, precomputed_batch())
    torch.testing.assert_close(obj_reps[BOXES[..., 0] > -1.5], by_hand(pre))


def test_evaluation_reads_running_statistics_so_a_sample_does_not_depend_on_its_batch():
    model = build_visual_front_end(cfg()).train()
    for seed in range(3):
        model.encode(precomputed_batch(seed))
    assert model.image_norm.num_batches_tracked == 3 and model.region_norm.running_var.ne(1).all()
    model.eval()
    batch = precomputed_batch(7)
    with torch.no_grad():
        together = model.encode(batch).obj_reps
        alone = model.encode({k: v[1:2] for k, v in batch.items()}).obj_reps
        _, pre = projected(model, batch)
    torch.testing.assert_close(alone[0], together[1])
    whole = model.image_norm
    expected = (pre[0] - whole.running_mean) / torch.sqrt(whole.running_var + EPS)
    torch.testing.assert_close(together[0, 0], expected)


def test_a_training_batch_of_one_image_trains_on_the_running_statistics():
    model = build_visual_front_end(cfg()).train()
    model.encode(precomputed_batch(0))
    batch = {k: v[:1] for k, v in precomputed_batch(1).items()}  # one image: one whole-image row, one box
    obj_reps, pre = projected(model, batch)
    whole = model.image_norm
    torch.testing.assert_close(obj_reps[0, 0], (pre[0] - whole.running_mean) / torch.sqrt(whole.running_var + EPS))
    obj_reps.sum().backward()
    assert model.obj_downsample[1].weight.grad.abs().sum() > 0


def test_grid_cells_standardise_the_whole_image_token_across_the_batch():
    model = build_visual_front_end(cfg(whole_image=False, **FRONT_ENDS["grid"])).train()
    assert model.image_norm is not None  # region 0 of cells is always the whole image
    torch.manual_seed(0)
    batch = {"image": torch.randn(3, 3, 64, 96), "im_info": IM_INFO}
    obj_reps, pre = projected(model, batch)
    box_mask = model.encode(batch).box_mask
    whole = box_mask.nonzero()[:, 1] == 0
    assert int(whole.sum()) == 3 and int((~whole).sum()) > 3
    torch.testing.assert_close(obj_reps[:, 0], by_hand(pre[whole]))
    torch.testing.assert_close(obj_reps[:, 1:][box_mask[:, 1:]], by_hand(pre[~whole]))


ON_IMAGES = {  # front-ends on images with NETWORK.IMAGE_FROZEN_BN true (network_cfg's default)
    "regions, original ResNet": FRONT_ENDS["fast_rcnn"],
    "regions, timm ViT": dict(FRONT_ENDS["fast_rcnn"], BACKBONE="vit_tiny_patch16_224", BACKBONE_ARGS=TINY_VIT),
    "grid": FRONT_ENDS["grid"],
    "patches": FRONT_ENDS["patches"],
}


@pytest.mark.parametrize("name", sorted(ON_IMAGES))
def test_frozen_batchnorm_of_the_image_network_leaves_the_standardisation_training(name):
    """IMAGE_FROZEN_BN keeps the image network's BatchNorms on running statistics; the standardisation still reads
    the batch's statistics in training and updates its running ones."""
    model = build_visual_front_end(cfg(**ON_IMAGES[name])).train()
    assert model.image_norm.training and model.region_norm.training
    frozen = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
              and not isinstance(m, Standardise)]
    assert all(not m.training for m in frozen)
    torch.manual_seed(0)
    batch = {"image": torch.randn(3, 3, 64, 96), "boxes": BOXES, "im_info": IM_INFO}
    obj_reps, pre = projected(model, batch)
    box_mask = model.encode(batch).box_mask
    whole = box_mask.nonzero()[:, 1] == 0
    torch.testing.assert_close(obj_reps[:, 0], by_hand(pre[whole]))
    torch.testing.assert_close(obj_reps[:, 1:][box_mask[:, 1:]], by_hand(pre[~whole]))
    assert model.image_norm.num_batches_tracked == 2 and model.image_norm.running_var.ne(1).all()


def test_a_front_end_without_the_method_is_refused_naming_the_key(monkeypatch):
    monkeypatch.setitem(front_ends.VISUAL_FRONT_ENDS, "precomputed", lambda cfg: torch.nn.Identity())
    with pytest.raises(ValueError, match="NETWORK.STANDARDISE_VISUAL_TOKENS"):
        build_visual_front_end(cfg())
    assert isinstance(build_visual_front_end(cfg(False)), torch.nn.Identity)
