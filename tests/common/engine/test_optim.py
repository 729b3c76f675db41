"""Optimizers and parameter groups against hand-written references."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from easydict import EasyDict
from torch import nn

from common.engine.optim import OriginalAdamW, build_optimizer, build_param_groups, no_decay_names


def reference_original_adamw(p, grads, lr, wd, b1=0.9, b2=0.999, eps=1e-6):
    """The original's AdamW update, written out in numpy (float64)."""
    p, m, v = p.astype(np.float64), np.zeros_like(p, np.float64), np.zeros_like(p, np.float64)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
        p = p - lr * wd * p
    return p


def run_optimizer(optimizer_cls, start, grads, **kwargs):
    param = nn.Parameter(torch.tensor(start, dtype=torch.float64))
    optimizer = optimizer_cls([param], **kwargs)
    for g in grads:
        param.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
    return param.detach().numpy()


def test_original_adamw_matches_the_written_out_update():
    rng = np.random.default_rng(0)
    start = rng.normal(size=5)
    grads = [rng.normal(scale=1e-4, size=5) for _ in range(6)]  # small gradients: eps matters
    got = run_optimizer(OriginalAdamW, start, grads, lr=0.01, weight_decay=0.1)
    np.testing.assert_allclose(got, reference_original_adamw(start, grads, 0.01, 0.1), rtol=0, atol=1e-12)
    # torch's AdamW puts eps after the bias correction and decays first: measurably different here
    torch_adamw = run_optimizer(torch.optim.AdamW, start, grads, lr=0.01, weight_decay=0.1, eps=1e-6)
    assert np.abs(torch_adamw - got).max() > 1e-4


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.vlbert = nn.ModuleDict({"encoder": nn.Linear(3, 3), "LayerNorm": nn.LayerNorm(3)})
        self.head = nn.Linear(3, 2)
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)


def test_each_parameter_in_exactly_one_group_first_rule_wins():
    module = Tiny()
    groups = build_param_groups(module, base_lr=1.0, weight_decay=0.01,
                                lr_mult=[("vlbert", 0.5), ("vlbert.encoder", 2.0), "head,3"])
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [p for p in module.parameters() if p.requires_grad]
    assert sorted(ids) == sorted(id(p) for p in trainable)  # once each, frozen ones left out
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lr_of[id(module.vlbert["encoder"].weight)] == 0.5  # "vlbert" matched first
    assert lr_of[id(module.head.weight)] == 3.0
    assert all(g["initial_lr"] == g["lr"] for g in groups)


def test_no_decay_groups_hold_norm_weights_and_biases():
    module = Tiny()
    assert no_decay_names(module) == {
        "vlbert.encoder.bias", "vlbert.LayerNorm.weight", "vlbert.LayerNorm.bias", "head.bias", "frozen.bias"}
    groups = build_param_groups(module, 1.0, 0.01, no_decay_norm_bias=True)
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay_of[id(module.head.weight)] == 0.01 and decay_of[id(module.head.bias)] == 0.0
    assert decay_of[id(module.vlbert["LayerNorm"].weight)] == 0.0
    # without the option every parameter decays, as in the original
    assert {g["weight_decay"] for g in build_param_groups(module, 1.0, 0.01)} == {0.01}


@pytest.mark.parametrize("name, expected_type", [("SGD", torch.optim.SGD), ("Adam", torch.optim.Adam),
                                                 ("AdamW", OriginalAdamW)])
def test_base_lr_is_per_sample_lr_times_total_batch(name, expected_type):
    cfg = EasyDict(TRAIN=dict(LR=1e-4, BATCH_IMAGES=8, GRAD_ACCUMULATE_STEPS=2, WD=0.0001, MOMENTUM=0.9,
                              OPTIMIZER=name, LR_MULT=[("head", 0.5)], ADAMW_ORIGINAL=True))
    optimizer = build_optimizer(cfg, Tiny(), world_size=4)
    assert isinstance(optimizer, expected_type)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["default"] == pytest.approx(1e-4 * 4 * 8 * 2) and lrs["head"] == pytest.approx(0.5 * 6.4e-3)


def test_unknown_optimizer_names_the_key():
    cfg = EasyDict(TRAIN=dict(LR=1e-4, BATCH_IMAGES=1, GRAD_ACCUMULATE_STEPS=1, WD=0.0, MOMENTUM=0.9,
                              OPTIMIZER="Lamb", LR_MULT=[]))
    with pytest.raises(ValueError, match="TRAIN.OPTIMIZER"):
        build_optimizer(cfg, Tiny(), world_size=1)
