"""train_main: original flags, --partial-pretrain with the task's follow-up, --do-test on the kept checkpoint."""
from __future__ import annotations

import dataclasses

import torch

from common.engine.entry import train_main
from tests.common.engine.standin_task import STANDIN, StandInModule
from tests.common.engine.test_engine import YAML


def test_partial_pretrain_then_do_test(tmp_path):
    torch.manual_seed(123)
    pretrained = {k: v.clone() for k, v in StandInModule(0.0).state_dict().items()}
    pretrain_path = tmp_path / "pretrained.model"
    torch.save({"state_dict": {f"module.{k}": v for k, v in pretrained.items()}}, pretrain_path)
    calls = {}
    task = dataclasses.replace(
        STANDIN,
        after_load_pretrain=lambda module, cfg, state_dict: calls.setdefault("after_load", sorted(state_dict)),
        test_after_training=lambda cfg, path, env: calls.setdefault("test", path),
    )
    argv = ["--cfg", YAML, "--model-dir", str(tmp_path), "--partial-pretrain", str(pretrain_path), "--do-test",
            "OUTPUT_PATH", "out", "TRAIN.END_EPOCH", "1", "TRAIN.OPTIMIZER", "SGD", "TRAIN.LR", "0", "TRAIN.WD", "0"]
    state = train_main(task, argv)
    out = tmp_path / "out/standin/train_train"
    assert state.epoch == 1
    assert calls["after_load"] == ["module.net.0.bias", "module.net.0.weight", "module.net.3.bias",
                                   "module.net.3.weight"]
    assert calls["test"] == str(out / "standin-best.model")
    trained = torch.load(out / "standin-0000.model", weights_only=True)["state_dict"]
    for key, value in pretrained.items():  # LR 0: the loaded weights are what training kept
        assert torch.equal(trained[key], value), key
    assert list(out.glob("standin_*.log")) and (out / "config.yaml").exists()
