"""A 2-process gloo run resumed from its epoch-0 checkpoint ends bit-identical to the uninterrupted run.

Each rank keeps its own dropout stream, so the checkpoint must restore every rank's generators, not rank 0's.
"""
from __future__ import annotations

import shutil

import pytest
import torch

from tests.common.engine.test_engine import ENTRY, YAML, final_weights, launch


@pytest.mark.slow
def test_two_process_resume_is_bitwise_identical(tmp_path):
    overrides = ["OUTPUT_PATH", ".", "NETWORK.VLBERT.hidden_dropout_prob", "0.3", "TRAIN.END_EPOCH", "2"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    proc = launch(["./scripts/dist_run_single.sh", "2", ENTRY, YAML, str(straight), *overrides])
    output = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, output
    folder = "standin/train_train"
    (resumed / folder).mkdir(parents=True)
    shutil.copy(straight / folder / "standin-0000.model", resumed / folder)  # as if killed after epoch 0
    proc = launch(["./scripts/dist_run_single.sh", "2", ENTRY, YAML, str(resumed), *overrides])
    output = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, output
    assert "resumed from" in output
    expected, got = final_weights(straight), final_weights(resumed)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
