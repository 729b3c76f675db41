"""Checkpoint files: names, content, keep-k, RESUME, and the wrapper handling of loaders."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from common.config import load_config
from common.engine.checkpoint import Checkpointer, strip_module_prefix, unwrap
from common.engine.dist import DistEnv
from common.engine.trainer import fit
from tests.common.engine.standin_task import STANDIN
from tests.common.engine.test_engine import YAML


def train(out, *overrides):
    return fit(STANDIN, load_config(YAML, ["OUTPUT_PATH", str(out), *overrides]), DistEnv(), "standin")


def test_checkpoint_content_loads_with_weights_only_and_has_no_wrapper_prefix(tmp_path):
    train(tmp_path, "TRAIN.END_EPOCH", "1")
    path = tmp_path / "standin/train_train/standin-0000.model"
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert set(payload) == {"state_dict", "optimizer", "scheduler", "scaler", "train_state", "rng",
                            "validation_monitor", "config"}
    assert sorted(payload["state_dict"]) == ["net.0.bias", "net.0.weight", "net.3.bias", "net.3.weight"]
    assert payload["train_state"]["epoch"] == 1 and payload["train_state"]["global_step"] == 8  # 32 / 4
    assert len(payload["rng"]) == 1  # one generator state per rank
    assert payload["validation_monitor"]["best_epoch"] == 0
    assert payload["config"]["TRAIN"]["BATCH_IMAGES"] == 4 and isinstance(payload["config"], dict)
    assert (tmp_path / "standin/train_train/standin-best.model").exists()
    assert (tmp_path / "standin/train_train/config.yaml").exists()
    assert not list((tmp_path / "standin/train_train").glob("*.tmp-*"))  # the temporary file was renamed


def test_checkpoint_keep_leaves_the_newest_epoch_files(tmp_path):
    train(tmp_path, "TRAIN.END_EPOCH", "4", "CHECKPOINT_KEEP", "2")
    names = sorted(p.name for p in (tmp_path / "standin/train_train").glob("*.model"))
    assert names == ["standin-0002.model", "standin-0003.model", "standin-best.model"]


def test_resume_flag_loads_begin_epoch_minus_one(tmp_path):
    train(tmp_path, "TRAIN.END_EPOCH", "2")
    state = train(tmp_path, "TRAIN.END_EPOCH", "3", "TRAIN.RESUME", "true", "TRAIN.BEGIN_EPOCH", "1",
                  "TRAIN.AUTO_RESUME", "false")
    assert state.epoch == 3 and state.global_step == 3 * 8  # epoch 1 was run again, from epoch 0's file
    with pytest.raises(FileNotFoundError, match="standin-0006.model"):
        train(tmp_path, "TRAIN.END_EPOCH", "8", "TRAIN.RESUME", "true", "TRAIN.BEGIN_EPOCH", "7")


def test_auto_resume_of_a_finished_run_trains_nothing(tmp_path):
    train(tmp_path, "TRAIN.END_EPOCH", "2")
    before = (tmp_path / "standin/train_train/standin-0001.model").stat().st_mtime_ns
    state = train(tmp_path, "TRAIN.END_EPOCH", "2")
    assert state.epoch == 2 and (tmp_path / "standin/train_train/standin-0001.model").stat().st_mtime_ns == before


def test_unwrap_only_removes_real_wrappers():
    class HasModuleAttribute(nn.Module):  # a task module may well call a child "module"
        def __init__(self):
            super().__init__()
            self.module = nn.Linear(2, 2)

    plain = HasModuleAttribute()
    assert unwrap(plain) is plain
    assert unwrap(nn.DataParallel(plain)) is plain
    assert strip_module_prefix({"module.a": 1, "module.b": 2}) == {"a": 1, "b": 2}
    assert strip_module_prefix({"module.a": 1, "b": 2}) == {"module.a": 1, "b": 2}


def test_epoch_files_are_found_by_number(tmp_path):
    checkpointer = Checkpointer(str(tmp_path / "vlbert"))
    for epoch in (10, 2, 0):
        (tmp_path / f"vlbert-{epoch:04d}.model").write_bytes(b"")
    (tmp_path / "vlbert-best.model").write_bytes(b"")
    assert [p.rsplit("-", 1)[1] for p in checkpointer.epoch_files()] == ["0000.model", "0002.model", "0010.model"]
