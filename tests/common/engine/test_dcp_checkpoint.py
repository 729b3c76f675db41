"""TRAIN.CHECKPOINT_FORMAT dcp in one process (the stand-in task): the folder holds exactly what a `.model` file
holds, resumes bit for bit, is never picked half-written, and is read only through safe unpickling."""
from __future__ import annotations

import os
import pickle
import shutil

import pytest
import torch

from common.config import load_config
from common.engine.dist import DistEnv
from common.engine.trainer import fit
from common.model.dcp_files import read_tensor_metadata, to_model_file
from common.model.state_dict_io import read_checkpoint_file
from external import convert_checkpoint
from tests.checkpoint_tensors import checkpoint_tensors
from tests.common.engine.standin_task import STANDIN
from tests.common.engine.test_engine import YAML

RUN = "standin/train_train"
DCP = ("TRAIN.CHECKPOINT_FORMAT", "dcp")


def train(out, *overrides: str):
    cfg = load_config(YAML, ["OUTPUT_PATH", str(out), "NETWORK.VLBERT.hidden_dropout_prob", "0.3", *overrides])
    return fit(STANDIN, cfg, DistEnv(), "standin")



def without_config(checkpoint: dict) -> dict:
    return {k: v for k, v in checkpoint.items() if k != "config"}


def assert_same_checkpoint(got: dict, expected: dict) -> None:
    """Every tensor equal bit for bit, and the non-tensor entries (param groups, train state) equal."""
    got_tensors = checkpoint_tensors(without_config(got))
    expected_tensors = checkpoint_tensors(without_config(expected))
    assert got_tensors.keys() == expected_tensors.keys()
    assert [k for k in expected_tensors if not torch.equal(got_tensors[k], expected_tensors[k])] == []
    assert got["optimizer"]["param_groups"] == expected["optimizer"]["param_groups"]
    assert got["train_state"] == expected["train_state"] and got["scheduler"] == expected["scheduler"]


def test_dcp_folder_converts_to_the_model_file_of_the_same_run(tmp_path):
    train(tmp_path / "file", "TRAIN.END_EPOCH", "2")
    train(tmp_path / "dcp", "TRAIN.END_EPOCH", "2", *DCP)
    folder = tmp_path / "dcp" / RUN / "standin-0001.dcp"
    assert sorted(os.listdir(folder)) == [".metadata", "__0_0.distcp", "trainer.pt"]
    assert not list((tmp_path / "dcp" / RUN).glob("*.tmp"))
    expected = torch.load(tmp_path / "file" / RUN / "standin-0001.model", weights_only=True)
    assert_same_checkpoint(to_model_file(str(folder)), expected)
    out = tmp_path / "converted.model"
    convert_checkpoint.main(["--dcp", str(folder), "--out", str(out)])
    assert_same_checkpoint(torch.load(out, weights_only=True), expected)
    # every test script reads checkpoints through read_checkpoint_file, which takes the folder itself too
    assert checkpoint_tensors(read_checkpoint_file(str(folder))["state_dict"]).keys() == expected["state_dict"].keys()


def test_dcp_resume_is_bitwise_identical(tmp_path):
    train(tmp_path / "straight", "TRAIN.END_EPOCH", "3", *DCP)
    (tmp_path / "resumed" / RUN).mkdir(parents=True)
    shutil.copytree(tmp_path / "straight" / RUN / "standin-0000.dcp", tmp_path / "resumed" / RUN / "standin-0000.dcp")
    state = train(tmp_path / "resumed", "TRAIN.END_EPOCH", "3", *DCP)
    assert state.epoch == 3
    assert_same_checkpoint(to_model_file(str(tmp_path / "resumed" / RUN / "standin-0002.dcp")),
                           to_model_file(str(tmp_path / "straight" / RUN / "standin-0002.dcp")))


def test_async_dcp_checkpoints_equal_synchronous_ones(tmp_path):
    train(tmp_path / "sync", "TRAIN.END_EPOCH", "2", *DCP)
    train(tmp_path / "async", "TRAIN.END_EPOCH", "2", *DCP, "TRAIN.CHECKPOINT_ASYNC", "true")
    for name in ("standin-0000.dcp", "standin-0001.dcp", "standin-best.dcp"):
        assert_same_checkpoint(to_model_file(str(tmp_path / "async" / RUN / name)),
                               to_model_file(str(tmp_path / "sync" / RUN / name)))


def test_half_written_or_broken_dcp_folders_are_never_resumed(tmp_path, caplog):
    train(tmp_path, "TRAIN.END_EPOCH", "2", *DCP)
    folder = tmp_path / RUN
    partial = folder / "standin-0002.dcp.tmp"  # a run stopped while writing epoch 2: shards, no rename
    shutil.copytree(folder / "standin-0001.dcp", partial)
    broken = folder / "standin-0003.dcp"  # complete name, damaged trainer file
    shutil.copytree(folder / "standin-0001.dcp", broken)
    (broken / "trainer.pt").write_bytes(b"not a checkpoint")
    with caplog.at_level("INFO"):
        state = train(tmp_path, "TRAIN.END_EPOCH", "5", *DCP)
    assert f"skipping unreadable checkpoint {broken}" in caplog.text
    assert "resumed from" in caplog.text and "standin-0001.dcp" in caplog.text.split("resumed from")[1]
    assert state.epoch == 5 and (folder / "standin-0004.dcp").is_dir()


def test_checkpoint_keep_prunes_dcp_folders(tmp_path):
    train(tmp_path, "TRAIN.END_EPOCH", "4", "CHECKPOINT_KEEP", "2", *DCP)
    assert sorted(p.name for p in (tmp_path / RUN).glob("*.dcp")) == [
        "standin-0002.dcp", "standin-0003.dcp", "standin-best.dcp"]


def test_async_needs_the_dcp_format(tmp_path):
    with pytest.raises(ValueError, match="TRAIN.CHECKPOINT_ASYNC true needs TRAIN.CHECKPOINT_FORMAT dcp"):
        train(tmp_path, "TRAIN.CHECKPOINT_ASYNC", "true")


# 32 samples / batch 4 = 8 updates per epoch; steps 3, 6 in epoch 0, 9, 12, 15 in epoch 1 (16 ends it)
STEPS = ("TRAIN.CHECKPOINT_EVERY_STEPS", "3")


def test_dcp_step_folders_equal_the_step_files_of_the_same_run_and_keep_the_last_two(tmp_path):
    train(tmp_path / "file", "TRAIN.END_EPOCH", "2", *STEPS)
    train(tmp_path / "dcp", "TRAIN.END_EPOCH", "2", *STEPS, "TRAIN.KEEP_LAST", "2", *DCP)
    steps = tmp_path / "dcp" / RUN / "steps"
    assert sorted(p.name for p in steps.iterdir()) == ["standin-e0001-s00000012.dcp", "standin-e0001-s00000015.dcp"]
    got = to_model_file(str(steps / "standin-e0001-s00000015.dcp"))
    assert got["train_state"]["batches_done"] == 7 and got["train_state"]["global_step"] == 15  # the data position
    expected = torch.load(tmp_path / "file" / RUN / "steps/standin-e0001-s00000015.model", weights_only=True)
    assert_same_checkpoint(got, expected)


def test_async_dcp_step_folders_equal_synchronous_ones(tmp_path):
    for name, extra in (("sync", ()), ("async", ("TRAIN.CHECKPOINT_ASYNC", "true"))):
        train(tmp_path / name, "TRAIN.END_EPOCH", "2", *STEPS, "TRAIN.KEEP_LAST", "2", *DCP, *extra)
    steps = tmp_path / "async" / RUN / "steps"
    assert sorted(p.name for p in steps.iterdir()) == ["standin-e0001-s00000012.dcp", "standin-e0001-s00000015.dcp"]
    for name in ("steps/standin-e0001-s00000015.dcp", "standin-0001.dcp", "standin-best.dcp"):
        assert_same_checkpoint(to_model_file(str(tmp_path / "async" / RUN / name)),
                               to_model_file(str(tmp_path / "sync" / RUN / name)))


def test_zero1_step_files_are_gathered_like_a_ddp_runs(tmp_path):
    train(tmp_path / "ddp", "TRAIN.END_EPOCH", "2", *STEPS)
    train(tmp_path / "zero1", "TRAIN.END_EPOCH", "2", *STEPS, "TRAIN.KEEP_LAST", "1", "TRAIN.DATA_PARALLEL", "zero1")
    steps = tmp_path / "zero1" / RUN / "steps"
    assert sorted(p.name for p in steps.iterdir()) == ["standin-e0001-s00000015.model"]
    got = torch.load(steps / "standin-e0001-s00000015.model", weights_only=True)
    expected = torch.load(tmp_path / "ddp" / RUN / "steps/standin-e0001-s00000015.model", weights_only=True)
    assert got["train_state"] == expected["train_state"]
    assert all(torch.equal(got["state_dict"][k], v) for k, v in expected["state_dict"].items())


def test_dcp_step_folder_resumes_mid_epoch_bitwise_and_a_half_written_one_is_never_picked(tmp_path, caplog):
    train(tmp_path / "straight", "TRAIN.END_EPOCH", "2", *STEPS, *DCP)
    steps = tmp_path / "resumed" / RUN / "steps"
    steps.mkdir(parents=True)
    shutil.copytree(tmp_path / "straight" / RUN / "steps/standin-e0001-s00000012.dcp",
                    steps / "standin-e0001-s00000012.dcp")
    partial = steps / "standin-e0001-s00000015.dcp.tmp"  # a run stopped while writing step 15: shards, no rename
    shutil.copytree(steps / "standin-e0001-s00000012.dcp", partial)
    with caplog.at_level("INFO"):
        state = train(tmp_path / "resumed", "TRAIN.END_EPOCH", "2", *STEPS, *DCP)
    assert "standin-e0001-s00000012.dcp: epoch 1 after batch 4, global step 12" in caplog.text
    assert state.epoch == 2 and not partial.exists()
    assert_same_checkpoint(to_model_file(str(tmp_path / "resumed" / RUN / "standin-0001.dcp")),
                           to_model_file(str(tmp_path / "straight" / RUN / "standin-0001.dcp")))


def test_in_loop_best_checkpoint_is_a_dcp_folder_with_the_data_position(tmp_path):
    """TRAIN.VAL_EVERY_STEPS under dcp: a new best mid-epoch writes `-best.dcp`, whose train_state holds the batches
    of the epoch already trained (the same dict a `.model` best file of the ddp run holds)."""
    in_loop_only = ("TRAIN.END_EPOCH", "1", "TRAIN.VAL_EVERY_STEPS", "3", "VAL_FREQUENT", "2")  # no epoch-end val
    train(tmp_path / "file", *in_loop_only)
    train(tmp_path / "dcp", *in_loop_only, *DCP)
    expected = torch.load(tmp_path / "file" / RUN / "standin-best.model", weights_only=True)
    got = to_model_file(str(tmp_path / "dcp" / RUN / "standin-best.dcp"))
    assert got["train_state"]["batches_done"] == 6 and got["train_state"]["best_step"] == 6  # 8 batches an epoch
    assert_same_checkpoint(got, expected)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("true",))


def test_dcp_metadata_that_names_other_code_is_refused(tmp_path):
    train(tmp_path, "TRAIN.END_EPOCH", "1", *DCP)
    folder = tmp_path / RUN / "standin-0000.dcp"
    assert read_tensor_metadata(str(folder))  # the real metadata reads
    (folder / ".metadata").write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(ValueError, match=f"{folder}: not a readable DCP checkpoint .*os.system|posix.system"):
        read_tensor_metadata(str(folder))
