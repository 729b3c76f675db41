"""TRAIN.DATA_PARALLEL pieces in one process: which modules become FSDP units and which parameters stay replicated,
the dry step behind FIND_UNUSED_PARAMETERS auto, the config checks, and (in a one-rank gloo group) zero1 with every
optimizer of the project and the DTensor-aware clipping and loss scaling, each against the plain computation."""
from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
from torch import nn

from common.config import load_config
from common.config_node import ConfigError
from common.engine.lr_schedule import StepwiseSchedule
from common.engine.optim import OriginalAdamW, build_param_groups, shard_optimizer_state
from common.engine.parallel import REPLICATED, data_parallel_mode, replicated_parameters, shard_units
from common.engine.unused_params import dry_step
from common.model.bert_encoder import BertLayer
from common.model.fast_rcnn import FastRCNN
from common.model.vlbert import VisualLinguisticBert
from tests.common.engine.standin_task import STANDIN, StandInModule
from tests.common.engine.test_engine import YAML


class VisualAndLanguage(nn.Module):
    """An end-to-end front-end (ResNet-18, stages 1-2 frozen) and a VL-BERT with scalar visual gates."""

    def __init__(self, vlbert_config):
        super().__init__()
        self.image_feature_extractor = FastRCNN(num_layers=18, final_dim=32)
        self.vlbert = VisualLinguisticBert(vlbert_config)


def test_units_are_the_transformer_layers_and_the_backbone_stages(tiny_vlbert_config):
    model = VisualAndLanguage(tiny_vlbert_config(visual_ln=False, num_hidden_layers=3))
    frcnn = model.image_feature_extractor
    expected = [frcnn.backbone.layer1, frcnn.backbone.layer2, frcnn.backbone.layer3,
                frcnn.roi_head_feature_extractor, *model.vlbert.encoder.layer]
    assert [id(m) for m in shard_units(model)] == [id(m) for m in expected]
    assert all(isinstance(m, BertLayer) for m in expected[4:])


def test_replicated_parameters_are_the_scalar_gates_and_batchnorm(tiny_vlbert_config):
    model = VisualAndLanguage(tiny_vlbert_config(visual_ln=False))
    replicated = replicated_parameters(model)
    names = {name for name, p in model.named_parameters() if p in replicated}
    assert {"vlbert.visual_scale_text", "vlbert.visual_scale_object"} <= names
    assert {"image_feature_extractor.backbone.bn1.weight",
            "image_feature_extractor.roi_head_feature_extractor.0.bn1.bias"} <= names
    assert all(".bn" in n or "downsample.1" in n or "visual_scale" in n for n in names)
    assert all(getattr(p, REPLICATED) for p in replicated)


class PartlyUsed(StandInModule):
    """The stand-in MLP (dropout draws from the generator) plus an unused Linear and a BatchNorm in training mode."""

    def __init__(self):
        super().__init__(0.5)
        self.unused = nn.Linear(3, 3)
        self.norm = nn.BatchNorm1d(6)

    def forward(self, batch: dict) -> dict:
        return super().forward({**batch, "x": self.norm(batch["x"])})


def test_dry_step_names_unused_parameters_and_leaves_no_trace(tmp_path):
    cfg = load_config(YAML, ["OUTPUT_PATH", str(tmp_path), "TRAIN.FLIP_PROB", "0.5"])
    from common.data.loader import build_loader
    from common.engine.dist import DistEnv

    loader = build_loader(STANDIN, cfg, "train", DistEnv())
    model = PartlyUsed()
    model.eval()
    model.net[0].weight.grad = torch.ones_like(model.net[0].weight)  # an accumulated gradient stays
    before = copy.deepcopy(model.state_dict())
    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    unused = dry_step(model, loader, torch.device("cpu"))
    assert unused == ["unused.weight", "unused.bias"]
    assert (torch.rand(1).item(), random.random(), np.random.rand()) == (
        torch.manual_seed(5) and torch.rand(1).item(), random.seed(5) or random.random(),
        np.random.seed(5) or np.random.rand())
    assert not model.training and torch.equal(model.net[0].weight.grad, torch.ones_like(model.net[0].weight))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # running statistics too
    assert model.net[3].weight.grad is None


def test_find_unused_parameters_accepts_auto_or_a_bool_and_names_the_key(tmp_path):
    load = lambda *o: load_config(YAML, ["OUTPUT_PATH", str(tmp_path), *o])  # noqa: E731
    assert load().TRAIN.FIND_UNUSED_PARAMETERS == "auto"
    assert load("TRAIN.FIND_UNUSED_PARAMETERS", "true").TRAIN.FIND_UNUSED_PARAMETERS is True
    with pytest.raises(ConfigError, match='TRAIN.FIND_UNUSED_PARAMETERS expects "auto", true or false'):
        load("TRAIN.FIND_UNUSED_PARAMETERS", "maybe")
    with pytest.raises(ValueError, match="TRAIN.DATA_PARALLEL: expected one of ddp, zero1, fsdp, found 'fdsp'"):
        data_parallel_mode(load("TRAIN.DATA_PARALLEL", "fdsp"))
    with pytest.raises(ValueError, match="TRAIN.CHECKPOINT_FORMAT: expected one of file, dcp"):
        data_parallel_mode(load("TRAIN.CHECKPOINT_FORMAT", "zip"))


@pytest.fixture
def one_rank_group(tmp_path):
    """A gloo process group of one rank (ZeroRedundancyOptimizer and fully_shard need one), torn down after."""
    torch_dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    yield
    torch_dist.destroy_process_group()


OPTIMIZERS = {
    "SGD": lambda groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9, fused=True),
    "Adam": lambda groups: torch.optim.Adam(groups, lr=0.1, fused=True),
    "AdamW": lambda groups: torch.optim.AdamW(groups, lr=0.1, betas=(0.9, 0.999), eps=1e-6, fused=True),
    "OriginalAdamW": lambda groups: OriginalAdamW(groups, lr=0.1, betas=(0.9, 0.999), eps=1e-6),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_zero1_steps_every_optimizer_with_param_groups_and_schedule_as_the_plain_one(name, one_rank_group):
    torch.manual_seed(0)
    plain_model = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 1))
    zero_model = copy.deepcopy(plain_model)
    optimizers = []
    for model in (plain_model, zero_model):  # LR_MULT on the last layer, no decay for norms and biases
        groups = build_param_groups(model, 0.01, 0.1, [("2.", 10.0)], no_decay_norm_bias=True)
        optimizers.append(OPTIMIZERS[name](groups))
    optimizers[1] = shard_optimizer_state(optimizers[1])
    assert type(optimizers[1].optim) is type(optimizers[0])
    assert [g["name"] for g in optimizers[1].param_groups] == [g["name"] for g in optimizers[0].param_groups]
    schedules = [StepwiseSchedule(opt, lambda t: 1.0 / (t + 1)) for opt in optimizers]
    for _ in range(3):
        x = torch.randn(4, 6)
        for model, opt, schedule in zip((plain_model, zero_model), optimizers, schedules, strict=True):
            model(x).square().mean().backward()
            opt.step()
            opt.zero_grad()
            schedule.step()
    # the schedule sets lr on the ZeroRedundancyOptimizer's groups; it hands them to its local optimizer each step
    assert [g["lr"] for g in optimizers[1].param_groups] == [g["lr"] for g in optimizers[0].param_groups]
    for a, b in zip(plain_model.parameters(), zero_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_sharded_clipping_and_fp16_scaler_equal_the_plain_ones(one_rank_group):
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from common.engine.amp import MixedPrecision

    torch.manual_seed(0)
    plain = PartlyUsed()
    plain.gate = nn.Parameter(torch.tensor(0.7))  # replicated, as VL-BERT's gates
    sharded = copy.deepcopy(plain)
    replicated = replicated_parameters(sharded)
    fully_shard(sharded, ignored_params=replicated)
    batch = {"x": torch.randn(4, 6), "y": torch.randn(4, 1)}
    norms = []
    for model, sharded_scaler in ((plain, False), (sharded, True)):
        amp = MixedPrecision(torch.device("cpu"), torch.float16, init_scale=1024.0, sharded=sharded_scaler)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        torch.manual_seed(1)
        amp.backward(model(batch)["loss"] * model.gate)
        norms.append(amp.unscale_and_clip(optimizer, list(model.parameters()), 0.05))
    assert any(isinstance(p.grad, DTensor) for p in sharded.parameters())
    torch.testing.assert_close(norms[1], norms[0], rtol=1e-6, atol=0)
    for a, b in zip(plain.parameters(), sharded.parameters(), strict=True):
        if a.grad is not None:
            grad = b.grad.full_tensor() if isinstance(b.grad, DTensor) else b.grad
            torch.testing.assert_close(grad, a.grad, rtol=1e-6, atol=1e-9)


class _Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield {"x": torch.zeros(2, 6)}


def test_streaming_loader_takes_no_dry_step():
    """A streaming loader has no samples to read by index: "auto" falls back to find_unused_parameters=True."""
    from common.engine.unused_params import first_samples_batch

    assert first_samples_batch(torch.utils.data.DataLoader(_Stream(), batch_size=None)) is None
