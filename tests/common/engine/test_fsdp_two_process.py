"""TRAIN.DATA_PARALLEL fsdp with two gloo processes on the FSDP stand-in (a BertLayer unit, a BatchNorm and a 0-dim
gate kept out of the shards): the run equals one process, and its DCP checkpoint resumes in one process.

One launch (~10 s of CPU); everything else runs in this process. Tolerance 1e-5, as the 2-process DDP test: two
processes average the two half-batch gradients where one process sums one batch, so float sums differ in the last
bits; SGD carries such differences forward without amplifying them (Adam would: it divides by sqrt(v)).
"""
from __future__ import annotations

import shutil

import pytest
import torch

from common.config import load_config
from common.engine.dist import DistEnv
from common.engine.trainer import fit
from common.model.dcp_files import to_model_file
from tests.common.engine.fsdp_standin import FSDP_STANDIN
from tests.common.engine.test_engine import ROOT, YAML, launch

ENTRY = str(ROOT / "tests/common/engine/fsdp_standin_train.py")
RUN = "standin/train_train"
# SGD, no shuffling difference (one permutation whatever the world size), 32 samples = 4 updates of 8 per epoch;
# validation: 11 samples in batches of 5, so rank 0 evaluates 2 batches and rank 1 one
COMMON = ["TRAIN.OPTIMIZER", "SGD", "TRAIN.LR", "0.01", "TRAIN.END_EPOCH", "2", "TRAIN.CLIP_GRAD_NORM", "0.5"]


def fit_here(out, *overrides: str):
    cfg = load_config(YAML, ["OUTPUT_PATH", str(out), *COMMON, *overrides])
    return fit(FSDP_STANDIN, cfg, DistEnv(), "standin")


def weights(path) -> dict:
    return to_model_file(str(path))["state_dict"] if path.is_dir() else torch.load(path, weights_only=True)[
        "state_dict"]


def assert_close(got: dict, expected: dict, atol: float) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key].shape == expected[key].shape, key
        torch.testing.assert_close(got[key], expected[key], atol=atol, rtol=0, msg=key)


@pytest.mark.slow  # a 2-process launch, as the other launcher tests
def test_fsdp_two_processes_equal_one_process_and_the_dcp_checkpoint_resumes_in_one(tmp_path):
    two = tmp_path / "two"
    proc = launch(["./scripts/dist_run_single.sh", "2", ENTRY, YAML, str(two), "OUTPUT_PATH", ".", *COMMON,
                   "TRAIN.BATCH_IMAGES", "4", "TRAIN.DATA_PARALLEL", "fsdp", "TRAIN.CHECKPOINT_FORMAT", "dcp"])
    output = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, output
    assert "fsdp: 1 unit(s)" in output  # the BertLayer
    assert "3 small parameter(s) replicated" in output  # the gate, BatchNorm's weight and bias
    assert sorted(p.name for p in (two / RUN).iterdir() if p.name.endswith(".dcp")) == [
        "standin-0000.dcp", "standin-0001.dcp", "standin-best.dcp"]
    fit_here(tmp_path / "one", "TRAIN.BATCH_IMAGES", "8")
    expected = weights(tmp_path / "one" / RUN / "standin-0001.model")
    assert expected["gate"].shape == ()  # the 0-dim gate keeps its shape in the checkpoint
    assert_close(weights(two / RUN / "standin-0001.dcp"), expected, atol=1e-5)

    resumed = tmp_path / "resumed"  # the 2-process epoch-0 checkpoint, continued by one process
    (resumed / RUN).mkdir(parents=True)
    shutil.copytree(two / RUN / "standin-0000.dcp", resumed / RUN / "standin-0000.dcp")
    state = fit_here(resumed, "TRAIN.BATCH_IMAGES", "8", "TRAIN.CHECKPOINT_FORMAT", "dcp")
    assert state.epoch == 2 and state.global_step == 8
    assert_close(weights(resumed / RUN / "standin-0001.dcp"), expected, atol=1e-5)


@pytest.mark.slow  # two 2-process launches
def test_fsdp_dcp_step_folder_of_two_processes_resumes_mid_epoch_bitwise(tmp_path):
    """TRAIN.CHECKPOINT_EVERY_STEPS under fsdp + dcp: step folders written by both ranks, the last two kept; the
    folder of step 6 (epoch 1 after 2 of its 4 updates) resumed by the same 2-process command ends bit for bit as
    the uninterrupted run (same world size, same reductions)."""
    steps = ["TRAIN.BATCH_IMAGES", "4", "TRAIN.DATA_PARALLEL", "fsdp", "TRAIN.CHECKPOINT_FORMAT", "dcp",
             "TRAIN.CHECKPOINT_EVERY_STEPS", "1", "TRAIN.KEEP_LAST", "2"]
    for name in ("straight", "resumed"):
        if name == "resumed":
            (tmp_path / name / RUN / "steps").mkdir(parents=True)
            shutil.copytree(tmp_path / "straight" / RUN / "steps/standin-e0001-s00000006.dcp",
                            tmp_path / name / RUN / "steps/standin-e0001-s00000006.dcp")
        proc = launch(["./scripts/dist_run_single.sh", "2", ENTRY, YAML, str(tmp_path / name), "OUTPUT_PATH", ".",
                       *COMMON, *steps])
        output = proc.communicate(timeout=240)[0]
        assert proc.returncode == 0, output
    assert "standin-e0001-s00000006.dcp: epoch 1 after batch 2, global step 6" in output
    assert sorted(p.name for p in (tmp_path / "straight" / RUN / "steps").iterdir()) == [
        "standin-e0001-s00000006.dcp", "standin-e0001-s00000007.dcp"]
    got, expected = (to_model_file(str(tmp_path / name / RUN / "standin-0001.dcp")) for name in ("resumed", "straight"))
    assert got["train_state"] == expected["train_state"]
    assert_close(got["state_dict"], expected["state_dict"], atol=0)
