"""Optimizers and parameter groups against hand-written references."""
from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
from easydict import EasyDict
from torch import nn

from common.engine.amp import MixedPrecision
from common.engine.optim import (
    OriginalAdamW,
    _fast_kwargs,
    build_optimizer,
    build_param_groups,
    no_decay_names,
)


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


@pytest.mark.parametrize("impl", ["auto", "foreach", "loop"])
def test_original_adamw_matches_the_written_out_update(impl):
    rng = np.random.default_rng(0)
    start = rng.normal(size=5)
    grads = [rng.normal(scale=1e-4, size=5) for _ in range(6)]  # small gradients: eps matters
    got = run_optimizer(OriginalAdamW, start, grads, lr=0.01, weight_decay=0.1, impl=impl)
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
                              OPTIMIZER=name, LR_MULT=[("head", 0.5)], ADAMW_ORIGINAL=True, NO_DECAY_NORM_BIAS=False))
    optimizer = build_optimizer(cfg, Tiny(), world_size=4)
    assert isinstance(optimizer, expected_type)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["default"] == pytest.approx(1e-4 * 4 * 8 * 2) and lrs["head"] == pytest.approx(0.5 * 6.4e-3)


def test_unknown_optimizer_names_the_key():
    cfg = EasyDict(TRAIN=dict(LR=1e-4, BATCH_IMAGES=1, GRAD_ACCUMULATE_STEPS=1, WD=0.0, MOMENTUM=0.9,
                              OPTIMIZER="Lamb", LR_MULT=[], NO_DECAY_NORM_BIAS=False))
    with pytest.raises(ValueError, match="TRAIN.OPTIMIZER"):
        build_optimizer(cfg, Tiny(), world_size=1)


class Small(nn.Module):
    """An embedding, two linears and a LayerNorm: ~1k parameters in 7 tensors."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.body = nn.Linear(8, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 4)


def two_groups(module: Small) -> list[dict]:
    """Different LRs; weight decay on the first group only."""
    body = [module.embed.weight, module.body.weight, module.body.bias]
    rest = [module.norm.weight, module.norm.bias, module.head.weight, module.head.bias]
    return [{"params": body, "lr": 1e-2, "weight_decay": 0.1}, {"params": rest, "lr": 3e-3, "weight_decay": 0.0}]


def set_grads(module: Small, step: int) -> None:
    """Seeded gradients of mixed scale (1e-4 to 1: eps matters for the small ones); head.bias has none on odd
    steps, so its step count falls behind the others of its group."""
    gen = torch.Generator().manual_seed(step)
    for i, param in enumerate(module.parameters()):
        scale = 10.0 ** -(i % 5)
        param.grad = torch.randn(param.shape, generator=gen) * scale
    if step % 2:
        module.head.bias.grad = None


def run_steps(module: Small, optimizer: torch.optim.Optimizer, steps: range) -> None:
    for step in steps:
        set_grads(module, step)
        optimizer.step()


def assert_same_run(fast: tuple, loop: tuple, atol: float = 1e-6, rtol: float = 1e-5) -> None:
    (fast_module, fast_opt), (loop_module, loop_opt) = fast, loop
    for (name, a), b in zip(fast_module.named_parameters(), loop_module.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=lambda m, name=name: f"{name}: {m}")
        sa, sb = fast_opt.state[a], loop_opt.state[b]
        assert sa["step"].dtype == torch.float32 and sa["step"].shape == () and sa["step"].device.type == "cpu"
        assert sa["step"].item() == sb["step"].item()
        for key in ("exp_avg", "exp_avg_sq"):
            where = f"{name} {key}"
            torch.testing.assert_close(sa[key], sb[key], atol=atol, rtol=rtol, msg=lambda m, w=where: f"{w}: {m}")


@pytest.mark.parametrize("impl", ["auto", "foreach"])
def test_original_adamw_fast_paths_equal_the_loop(impl):
    torch.manual_seed(0)
    loop_module = Small()
    fast_module = copy.deepcopy(loop_module)
    loop_opt = OriginalAdamW(two_groups(loop_module), eps=1e-6, impl="loop")
    fast_opt = OriginalAdamW(two_groups(fast_module), eps=1e-6, impl=impl)
    run_steps(loop_module, loop_opt, range(20))
    run_steps(fast_module, fast_opt, range(20))
    assert_same_run((fast_module, fast_opt), (loop_module, loop_opt))
    # the run covered what it claims: params moved, and one param of a group lags in step count
    assert fast_opt.state[fast_module.head.bias]["step"].item() == 10
    assert fast_opt.state[fast_module.head.weight]["step"].item() == 20
    assert not torch.equal(fast_module.head.bias, Small().head.bias)


def test_original_adamw_auto_uses_the_fused_kernel_on_cpu(monkeypatch):
    calls = []
    fused = torch._fused_adam_
    monkeypatch.setattr(torch, "_fused_adam_", lambda *a, **k: calls.append(len(a[0])) or fused(*a, **k))
    module = Small()
    optimizer = OriginalAdamW(two_groups(module), impl="auto")
    run_steps(module, optimizer, range(2))
    # step 0: one bucket per group (3 + 4 tensors); step 1: head.bias has no grad, so 3 + 3
    assert calls == [3, 4, 3, 3]


def test_fused_adamw_with_uncorrected_eps_would_be_caught():
    """The tolerance of the equivalence test is tight enough to see eps placed as torch.optim.AdamW places it."""
    torch.manual_seed(0)
    loop_module = Small()
    torch_module = copy.deepcopy(loop_module)
    loop_opt = OriginalAdamW(two_groups(loop_module), eps=1e-6, impl="loop")
    torch_opt = torch.optim.Adam(two_groups(torch_module), eps=1e-6, fused=True)  # wd 0.1 as L2: differs too
    for group in torch_opt.param_groups:
        group["weight_decay"] = 0.0
    for group in loop_opt.param_groups:
        group["weight_decay"] = 0.0
    run_steps(loop_module, loop_opt, range(20))
    run_steps(torch_module, torch_opt, range(20))
    with pytest.raises(AssertionError):
        assert_same_run((torch_module, torch_opt), (loop_module, loop_opt))


def test_loop_state_dict_resumes_in_the_fast_path():
    torch.manual_seed(0)
    loop_module = Small()
    loop_opt = OriginalAdamW(two_groups(loop_module), impl="loop")
    run_steps(loop_module, loop_opt, range(7))
    buffer = io.BytesIO()
    torch.save({"model": loop_module.state_dict(), "optimizer": loop_opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    fast_module = Small()
    fast_module.load_state_dict(saved["model"])
    fast_opt = OriginalAdamW(two_groups(fast_module), impl="auto")
    fast_opt.load_state_dict(saved["optimizer"])
    assert fast_opt.state_dict()["param_groups"] == loop_opt.state_dict()["param_groups"]
    run_steps(loop_module, loop_opt, range(7, 20))
    run_steps(fast_module, fast_opt, range(7, 20))
    assert_same_run((fast_module, fast_opt), (loop_module, loop_opt))
    # and the fast path writes the same format back
    fast_state, loop_state = fast_opt.state_dict(), loop_opt.state_dict()
    assert fast_state["state"].keys() == loop_state["state"].keys()
    for index, state in fast_state["state"].items():
        assert state.keys() == loop_state["state"][index].keys() == {"step", "exp_avg", "exp_avg_sq"}


def test_original_adamw_rejects_an_unknown_impl():
    with pytest.raises(ValueError, match="impl"):
        OriginalAdamW(Small().parameters(), impl="fused")


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_built_optimizers_are_fused_on_cpu(name):
    cfg = EasyDict(TRAIN=dict(LR=1e-4, BATCH_IMAGES=2, GRAD_ACCUMULATE_STEPS=1, WD=0.01, MOMENTUM=0.9,
                              OPTIMIZER=name, LR_MULT=[("head", 0.5)], ADAMW_ORIGINAL=False,
                              NO_DECAY_NORM_BIAS=False))
    optimizer = build_optimizer(cfg, Tiny(), world_size=1)
    assert optimizer.defaults["fused"] is True and optimizer.defaults.get("foreach") in (None, False)
    assert all(group["fused"] for group in optimizer.param_groups)


def test_fast_kwargs_falls_back_to_foreach_where_fused_is_not_supported():
    cpu = nn.Parameter(torch.zeros(2))
    assert _fast_kwargs([cpu]) == {"fused": True}
    assert _fast_kwargs([cpu, nn.Parameter(torch.zeros(2, dtype=torch.float64))]) == {"fused": True}
    assert _fast_kwargs([nn.Parameter(torch.zeros(2, device="meta"))]) == {"foreach": True}
    assert _fast_kwargs([cpu, nn.Parameter(torch.zeros(2, device="meta"))]) == {"foreach": True}
    assert _fast_kwargs([cpu, torch.zeros(2, dtype=torch.long)]) == {"foreach": True}


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_fused_cpu_optimizer_skips_the_step_the_fp16_scaler_rejects(name):
    cfg = EasyDict(TRAIN=dict(LR=1e-2, BATCH_IMAGES=1, GRAD_ACCUMULATE_STEPS=1, WD=0.0, MOMENTUM=0.9,
                              OPTIMIZER=name, LR_MULT=[], NO_DECAY_NORM_BIAS=False))
    module = Tiny()
    optimizer = build_optimizer(cfg, module, world_size=1)
    amp = MixedPrecision(torch.device("cpu"), torch.float16, init_scale=128.0)
    params = [p for p in module.parameters() if p.requires_grad]
    amp.backward(sum(p.sum() for p in params))  # gradients of ones, scaled
    params[0].grad[0, 0] = float("inf")
    before = [p.clone() for p in params]
    amp.step(optimizer, amp.unscale_and_clip(optimizer, params, -1.0))
    assert all(torch.equal(a, b) for a, b in zip(before, params, strict=True))
    optimizer.zero_grad()
    amp.backward(sum(p.sum() for p in params))  # a finite step then moves every parameter
    amp.step(optimizer, amp.unscale_and_clip(optimizer, params, -1.0))
    assert all(not torch.equal(a, b) for a, b in zip(before, params, strict=True))
