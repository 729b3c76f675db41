"""The engine's FLOP counter (common/engine/flops.py) against torch's own FlopCounterMode, which counts every matmul
and convolution the autograd graph runs, forward and backward, from the dispatched ops themselves."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.models import Setting, build, encoder_types, make_batch
from common.engine.flops import FlopCounter, matmul_rate, peak_flops_per_s, stack_flops, transformer_flops

TINY = dict(hidden=64, layers=2, heads=4, ffn=128, regions=4)


def tiny_model(name: str, which: str = "ours", checkpointing: bool = False):
    """bench's VQA model (ours, or transformers' VisualBERT), tiny; plain nn.Linear so FlopCounterMode sees the mm."""
    setting = Setting(name=name, batch=2, **TINY)
    torch.manual_seed(0)
    model = build(which, setting, onednn_linear=False).train()
    if checkpointing:
        model.vlbert.encoder.gradient_checkpointing = True
    return model, make_batch(setting, torch.device("cpu"))


@pytest.mark.parametrize("which", ["ours", "peer"])
def test_counter_equals_torch_flop_counter_on_a_training_step(which):
    """VL-BERT for VQA (and transformers' VisualBERT, whose stack is named in `encoder_types`): the same total."""
    model, batch = tiny_model("vqa", which)
    counter = FlopCounter(model, encoder_types())
    with FlopCounterMode(display=False) as reference:
        model(batch).backward()
    assert counter.take() == reference.get_total_flops() > 0
    assert counter.take() == 0  # take() resets


def test_frozen_convolutions_count_their_forward_only():
    """A frozen first stage (no input gradient, no weight gradient) under a trainable one, as FastRCNN's ResNet with
    IMAGE_FROZEN_BACKBONE_STAGES: the same total as torch's counter. (The bench e2e rows, ResNet-50 + RoI head,
    agree too: 1818.8 GFLOP for ours at batch 8.)"""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3),
                                torch.nn.Conv2d(16, 16, 1), torch.nn.Flatten(), torch.nn.Linear(16 * 25, 3))
    model[0].requires_grad_(False)
    counter = FlopCounter(model)
    with FlopCounterMode(display=False) as reference:
        model(torch.randn(2, 3, 16, 16)).sum().backward()
    assert counter.take() == reference.get_total_flops() > 0


def test_gradient_checkpointing_recomputation_is_not_counted():
    """Model FLOPs: the recomputed forward of a checkpointed layer is work the hardware does, not model FLOPs."""
    plain, batch = tiny_model("vqa")
    recomputed, _ = tiny_model("vqa", checkpointing=True)
    counts = []
    for model in (plain, recomputed):
        counter = FlopCounter(model)
        with FlopCounterMode(display=False) as reference:
            model(batch).backward()
        counts.append((counter.take(), reference.get_total_flops()))
    assert counts[0][0] == counts[1][0] == counts[0][1]
    assert counts[1][1] > counts[0][1]  # torch counts the recomputation


def test_validation_is_not_counted_and_the_counter_draws_nothing():
    model, batch = tiny_model("vqa")
    counter = FlopCounter(model)
    with torch.no_grad():
        model(batch)
    assert counter.take() == 0
    torch.manual_seed(5)
    with_counter = model(batch)
    state_with = torch.get_rng_state()
    assert counter.take() > 0
    counter.remove()
    torch.manual_seed(5)
    without = model(batch)
    assert torch.equal(with_counter, without) and torch.equal(state_with, torch.get_rng_state())
    assert counter.take() == 0  # removed: nothing counted any more


def test_stack_formula_by_hand():
    """One BERT layer, B=2, L=5, h=8, f=16, trainable, input needing a gradient: per layer
    6·B·L·(4h² + 2hf) + 12·B·L²·h (the formula of bench/RESULTS.md; biases not counted)."""
    from common.model.bert_encoder import BertEncoder

    encoder = BertEncoder(3, 8, 2, 16, "gelu", 0.0, 0.0)
    hidden = torch.zeros(2, 5, 8, requires_grad=True)
    b, length, h, f = 2, 5, 8, 16
    assert stack_flops(encoder.layer, hidden) == 3 * (6 * b * length * (4 * h * h + 2 * h * f) + 12 * b * length**2 * h)
    assert transformer_flops(b, length, h, f, 3) == stack_flops(encoder.layer, hidden)


def test_peak_probe_leaves_the_global_generator_alone():
    """A resumed run restores torch's generator from the checkpoint; a probe that drew from it would shift every
    later dropout mask (bitwise resume, docs/GUARANTEES.md)."""
    torch.manual_seed(11)
    before = torch.get_rng_state()
    rate = peak_flops_per_s(torch.device("cpu"), torch.float32)
    assert torch.equal(before, torch.get_rng_state())
    assert rate > 0
    rates = matmul_rate(torch.device("cpu"), torch.float32, sizes=(64,), repeats=1, onednn=False)
    assert list(rates) == ["torch.mm"] and torch.equal(before, torch.get_rng_state())
