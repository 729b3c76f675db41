"""Step checkpoints and mid-epoch resume on the stand-in task: file names and pruning, the data position, a run
killed part-way into an epoch (a real SIGKILL) and resumed ends bit for bit as the uninterrupted run, with loader
workers, persistent workers, augmentation from every global generator, accumulation and in-loop validation."""
from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from common.config import load_config
from common.data.loader import build_loader
from common.engine.amp import MixedPrecision
from common.engine.checkpoint import Checkpointer, load_checkpoint
from common.engine.dist import DistEnv
from common.engine.run import build_metrics
from common.engine.trainer import evaluate, fit
from tests.checkpoint_tensors import checkpoint_tensors
from tests.common.engine.standin_task import STANDIN, StandInModule
from tests.common.engine.test_engine import ENTRY, YAML, launch

RUN = "standin/train_train"
# 32 samples / batch 4 = 8 updates per epoch; steps 3, 6 in epoch 0, 9, 12, 15 in epoch 1 (16 ends it)
STEPS = ["TRAIN.CHECKPOINT_EVERY_STEPS", "3"]


def train(out: Path, *overrides: str, env: DistEnv | None = None):
    cfg = load_config(YAML, ["OUTPUT_PATH", str(out), *overrides])
    return fit(STANDIN, cfg, env or DistEnv(), "standin")


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.model"))



def assert_bitwise(got: dict, expected: dict) -> None:
    """Every tensor of two checkpoints (weights, optimizer moments, generator states) equal bit for bit."""
    assert got["train_state"] == expected["train_state"]
    got_tensors, expected_tensors = checkpoint_tensors(got), checkpoint_tensors(expected)
    assert got_tensors.keys() == expected_tensors.keys()
    assert any(k.startswith("optimizer.state.") for k in got_tensors)
    different = [k for k, v in expected_tensors.items() if not torch.equal(got_tensors[k], v)]
    assert not different, f"{len(different)} of {len(expected_tensors)} tensors differ: {different[:5]}"


def test_step_files_sit_beside_the_epoch_files_hold_the_position_and_keep_the_last_two(tmp_path):
    train(tmp_path, "TRAIN.END_EPOCH", "2", *STEPS, "TRAIN.KEEP_LAST", "2")
    run = tmp_path / RUN
    assert names(run) == ["standin-0000.model", "standin-0001.model", "standin-best.model"]
    assert names(run / "steps") == ["standin-e0001-s00000012.model", "standin-e0001-s00000015.model"]
    step = load_checkpoint(str(run / "steps/standin-e0001-s00000015.model"))
    epoch = load_checkpoint(str(run / "standin-0000.model"))
    assert set(step) == set(epoch)  # the same state, taken at another time
    assert {k: step["train_state"][k] for k in ("epoch", "batches_done", "global_step")} == \
        {"epoch": 1, "batches_done": 7, "global_step": 15}
    assert epoch["train_state"]["batches_done"] == 0 and epoch["train_state"]["epoch"] == 1
    assert step["train_state"]["layout"] == {"world_size": 1, "batches_per_epoch": 8, "batch_size": 4}
    assert not list(run.rglob("*.tmp-*"))
    checkpointer = Checkpointer(str(run / "standin"))
    assert [Path(p).name for p in checkpointer.epoch_files()] == ["standin-0000.model", "standin-0001.model"]


def test_keep_last_zero_keeps_every_step_file_and_epoch_keep_is_separate(tmp_path):
    train(tmp_path, "TRAIN.END_EPOCH", "3", *STEPS, "TRAIN.KEEP_LAST", "0", "CHECKPOINT_KEEP", "1")
    run = tmp_path / RUN
    assert names(run) == ["standin-0002.model", "standin-best.model"]
    assert [n.split("-s")[1] for n in names(run / "steps")] == [
        f"{s:08d}.model" for s in (3, 6, 9, 12, 15, 18, 21)]  # 24 ends the run: the epoch file covers it


@pytest.mark.parametrize("workers, accumulate, persistent, optimizer", [
    (0, 1, "true", "AdamW"), (2, 2, "true", "AdamW"), (1, 1, "false", "AdamW"), (0, 1, "true", "SGD"),
    (0, 1, "true", "Adam")])
def test_resume_from_a_step_file_equals_the_uninterrupted_run(tmp_path, monkeypatch, workers, accumulate, persistent,
                                                              optimizer):
    """A folder holding what a run killed after step 9 (epoch 1, batch 1 of 8) leaves: the step file. With loader
    workers (persistent, the default), augmentation from every global generator and dropout, for each optimizer."""
    monkeypatch.setenv("STANDIN_AUGMENT", "1")
    common = ["TRAIN.END_EPOCH", "2", "NUM_WORKERS_PER_GPU", str(workers), "TRAIN.PERSISTENT_WORKERS", persistent,
              "TRAIN.OPTIMIZER", optimizer,
              "TRAIN.GRAD_ACCUMULATE_STEPS",
              str(accumulate), "TRAIN.BATCH_IMAGES", str(4 // accumulate), "NETWORK.VLBERT.hidden_dropout_prob", "0.3",
              "TRAIN.CHECKPOINT_EVERY_STEPS", "1", "TRAIN.KEEP_LAST", "0"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(straight, *common)
    (resumed / RUN / "steps").mkdir(parents=True)
    shutil.copy(straight / RUN / "steps/standin-e0001-s00000009.model", resumed / RUN / "steps")
    state = train(resumed, *common)
    assert state.global_step == 16 and state.epoch == 2
    expected, got = (load_checkpoint(str(out / RUN / "standin-0001.model")) for out in (straight, resumed))
    assert_bitwise(got, expected)


def test_sigkill_mid_epoch_then_auto_resume_is_bitwise_identical(tmp_path):
    """A real `kill -9` of the training process part-way into epoch 1, after a step checkpoint; the restarted command
    resumes from that step file and ends equal, bit for bit, to the run that was never stopped."""
    common = ["TRAIN.END_EPOCH", "3", "NUM_WORKERS_PER_GPU", "2", "TRAIN.VAL_EVERY_STEPS", "5",
              "NETWORK.VLBERT.hidden_dropout_prob", "0.3", *STEPS]
    straight, killed = tmp_path / "straight", tmp_path / "killed"

    def command(out: Path) -> list[str]:
        return [sys.executable, ENTRY, "--cfg", YAML, "OUTPUT_PATH", str(out), *common]

    proc = launch(command(straight), {"STANDIN_AUGMENT": "1"})
    output = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, output
    proc = launch(command(killed), {"STANDIN_AUGMENT": "1", "STANDIN_SLEEP": "0.1"})
    target = killed / RUN / "steps/standin-e0001-s00000009.model"
    deadline = time.time() + 120
    while not target.exists() and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert target.exists() and not (killed / RUN / "standin-0001.model").exists()  # killed inside epoch 1
    resumed = launch(command(killed), {"STANDIN_AUGMENT": "1"})
    output = resumed.communicate(timeout=240)[0]
    assert resumed.returncode == 0, output
    assert "resumed from" in output and "steps/standin-e0001-s" in output and "after batch" in output
    expected, got = (load_checkpoint(str(out / RUN / "standin-0002.model")) for out in (straight, killed))
    assert_bitwise(got, expected)


def test_in_loop_validation_is_logged_by_step_and_best_is_the_best_of_all(tmp_path, caplog):
    with caplog.at_level("INFO"):
        state = train(tmp_path, "TRAIN.END_EPOCH", "2", "TRAIN.VAL_EVERY_STEPS", "3", *STEPS, "TRAIN.KEEP_LAST", "0")
    lines = [line for line in caplog.text.splitlines() if "Validation" in line]
    steps = [int(line.split("Step[")[1].split("]")[0]) for line in lines if "Step[" in line]
    assert steps == [3, 6, 9, 12, 15]
    from common.engine.sinks import read_metrics

    records = read_metrics(str(tmp_path / RUN / "metrics.jsonl"), ["step_val"])
    assert [r["step"] for r in records] == steps and all("NegMSE" in r["metrics"] for r in records)
    assert sum("Epoch[0] Validation" in line or "Epoch[1] Validation" in line for line in lines) == 2
    best = load_checkpoint(str(tmp_path / RUN / "standin-best.model"))["train_state"]
    assert best["global_step"] == state.best_step and best["best_val"] == state.best_val
    # an in-loop score is the score of the weights at that step: evaluate the step file independently
    cfg = load_config(YAML, ["OUTPUT_PATH", str(tmp_path)])
    module = StandInModule(0.0)
    module.load_state_dict(load_checkpoint(str(tmp_path / RUN / "steps/standin-e0000-s00000006.model"))["state_dict"])
    values = evaluate(module, build_loader(STANDIN, cfg, "val", DistEnv()), build_metrics(STANDIN, cfg),
                      MixedPrecision(torch.device("cpu")), torch.device("cpu"))
    logged = next(line for line in lines if "Step[6]" in line)
    assert f"Val-NegMSE={values['NegMSE']:.6f}" in logged


def test_in_loop_validation_on_the_last_step_of_an_epoch_is_left_to_the_epoch_end(tmp_path, caplog):
    with caplog.at_level("INFO"):
        train(tmp_path, "TRAIN.END_EPOCH", "1", "TRAIN.VAL_EVERY_STEPS", "4")
    assert "Step[4] Validation" in caplog.text and "Step[8]" not in caplog.text
    assert caplog.text.count("Epoch[0] Validation") == 1


def test_corrupt_newest_step_file_is_reported_and_the_one_before_is_used(tmp_path, caplog):
    train(tmp_path, "TRAIN.END_EPOCH", "2", *STEPS)
    newest = tmp_path / RUN / "steps/standin-e0001-s00000015.model"
    (tmp_path / RUN / "standin-0001.model").unlink()
    newest.write_bytes(newest.read_bytes()[:200])
    with caplog.at_level("INFO"):
        state = train(tmp_path, "TRAIN.END_EPOCH", "2", *STEPS)
    assert f"skipping unreadable checkpoint {newest}" in caplog.text
    assert "standin-e0001-s00000012.model: epoch 1 after batch 4" in caplog.text
    assert state.global_step == 16


def test_a_position_saved_under_another_layout_is_carried_over_with_a_warning(caplog):
    from common.engine.state import TrainState

    state = TrainState(layout={"world_size": 2, "batches_per_epoch": 4, "batch_size": 4})
    with caplog.at_level("WARNING"):
        state.load_state_dict({"epoch": 3, "batches_done": 3, "global_step": 15,
                               "layout": {"world_size": 1, "batches_per_epoch": 8, "batch_size": 4}})
    assert (state.epoch, state.batches_done, state.global_step) == (3, 2, 15)
    assert state.layout["world_size"] == 2 and "not the uninterrupted run's" in caplog.text
