"""Inference helpers: checkpoints with or without `module.`, outputs in dataset order, each sample once."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from common.config import load_config
from common.data.loader import build_loader
from common.engine import dist
from common.engine.dist import DistEnv
from common.engine.evaluate import load_module_for_inference, predict
from common.engine.trainer import fit
from tests.common.engine.standin_task import STANDIN
from tests.common.engine.test_engine import YAML


def standin_cfg(out):
    return load_config(YAML, ["OUTPUT_PATH", str(out), "TRAIN.END_EPOCH", "1"])


def test_checkpoints_with_and_without_module_prefix_load_alike(tmp_path):
    cfg = standin_cfg(tmp_path)
    fit(STANDIN, cfg, DistEnv(), "standin")
    path = tmp_path / "standin/train_train/standin-0000.model"
    payload = torch.load(path, weights_only=True)
    prefixed = tmp_path / "prefixed.model"
    torch.save({"state_dict": {f"module.{k}": v for k, v in payload["state_dict"].items()}}, prefixed)
    for source in (path, prefixed):
        module = load_module_for_inference(STANDIN, cfg, str(source))
        assert not module.training
        for key, value in module.state_dict().items():
            assert torch.equal(value, payload["state_dict"][key]), (source, key)


def test_single_process_outputs_follow_dataset_order(tmp_path):
    cfg = standin_cfg(tmp_path)
    module = STANDIN.build_module(cfg).eval()
    loader = build_loader(STANDIN, cfg, "val", DistEnv())
    outputs = predict(module, loader, show_progress=False)
    dataset = loader.dataset
    assert [o["index"] for o in outputs] == list(range(len(dataset)))
    expected = module.net(dataset.x)
    torch.testing.assert_close(torch.stack([o["prediction"] for o in outputs]), expected.detach())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inference_worker(rank: int, world: int, port: int, out_dir: str, result_path: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    env = dist.setup(distributed=True)
    try:
        cfg = standin_cfg(out_dir)
        torch.manual_seed(0)
        module = STANDIN.build_module(cfg).eval()
        outputs = predict(module, build_loader(STANDIN, cfg, "val", env), show_progress=False)
        if rank == 0:
            torch.save(outputs, result_path)
    finally:
        dist.teardown()


@pytest.mark.slow
def test_two_ranks_gather_every_sample_once_in_order(tmp_path):
    result = tmp_path / "outputs.pt"
    mp.spawn(_inference_worker, args=(2, _free_port(), str(tmp_path), str(result)), nprocs=2, join=True)
    outputs = torch.load(result, weights_only=True)
    assert [o["index"] for o in outputs] == list(range(11))  # 6 + 5 samples, none duplicated
    torch.manual_seed(0)
    module = STANDIN.build_module(standin_cfg(tmp_path)).eval()
    x = STANDIN.build_dataset(None, "val").x
    torch.testing.assert_close(torch.stack([o["prediction"] for o in outputs]), module.net(x).detach())
