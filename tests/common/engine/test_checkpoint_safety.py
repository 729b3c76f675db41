"""Checkpoints under faults: another experiment's files, temporary files left by `kill -9`, a full disk, the
non-finite guard's message, and a save or load slower than the collective timeout under 2 gloo processes."""
from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.config import load_config
from common.engine.checkpoint import Checkpointer, load_checkpoint
from common.engine.checkpoint_io import CheckpointWriteError
from common.engine.dist import DistEnv
from common.engine.resume_check import ResumeMismatchError, experiment_differences
from common.engine.trainer import NonFiniteLossError, fit
from tests.common.engine.standin_task import STANDIN
from tests.common.engine.test_engine import ENTRY, YAML, launch

RUN = "standin/train_train"


def train(out: Path, *overrides: str):
    return fit(STANDIN, load_config(YAML, ["OUTPUT_PATH", str(out), *overrides]), DistEnv(), "standin")


# ----- another experiment's checkpoints ------------------------------------------------------------------------
def test_resume_into_another_experiments_folder_is_refused_before_anything_is_written(tmp_path):
    train(tmp_path, "TRAIN.END_EPOCH", "1")
    config = tmp_path / RUN / "config.yaml"
    before = config.read_bytes()
    with pytest.raises(ResumeMismatchError) as error:
        train(tmp_path, "TRAIN.END_EPOCH", "2", "TRAIN.OPTIMIZER", "SGD")
    message = str(error.value)
    assert str(tmp_path / RUN / "standin-0000.model") in message
    assert "TRAIN.OPTIMIZER: checkpoint 'AdamW', this run 'SGD'" in message
    assert config.read_bytes() == before  # the config beside the checkpoints is still the one that wrote them
    assert not (tmp_path / RUN / "standin-0001.model").exists()


def test_experiment_keys_are_the_shape_and_meaning_keys_only():
    saved = {"MODULE": "A", "TRAIN": {"LR": 0.1, "OPTIMIZER": "AdamW"}, "DATASET": [{"DATASET": "cc"}],
             "NETWORK": {"VLBERT": {"hidden_size": 768, "hidden_dropout_prob": 0.1}, "PARTIAL_PRETRAIN": "a.model"}}
    changed = {"MODULE": "A", "TRAIN": {"LR": 0.2, "OPTIMIZER": "AdamW"}, "DATASET": [{"DATASET": "coco"}],
               "NETWORK": {"VLBERT": {"hidden_size": 1024, "hidden_dropout_prob": 0.2}, "PARTIAL_PRETRAIN": ""}}
    assert experiment_differences(saved, changed) == [
        "DATASET.0.DATASET: checkpoint 'cc', this run 'coco'",
        "NETWORK.VLBERT.hidden_size: checkpoint 768, this run 1024"]


# ----- temporary files left by an interrupted save ---------------------------------------------------------------
def test_temporary_files_of_dead_writers_are_removed_at_start_and_live_ones_kept(tmp_path):
    run = tmp_path / RUN
    (run / "steps").mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = "".join(c for c in socket.gethostname() if c.isalnum() or c in "_.")
    files = {
        "old_form_dead": run / f"standin-0003.model.tmp-{dead.pid}",  # what `kill -9` left before
        "dead": run / f"standin-best.model.tmp-{host}-{dead.pid}",
        "dead_step": run / "steps" / f"standin-e0001-s00000009.model.tmp-{host}-{dead.pid}",
        "alive": run / f"standin-0004.model.tmp-{host}-{sleeper.pid}",
        "other_host_fresh": run / "standin-0005.model.tmp-othernode-12",
        "other_host_old": run / "standin-0006.model.tmp-othernode-13",
        "other_prefix": run / f"another-0000.model.tmp-{dead.pid}",
    }
    for path in files.values():
        path.write_bytes(b"\0" * 1000)
    old = time.time() - 2 * 3600
    os.utime(files["other_host_old"], (old, old))
    try:
        train(tmp_path, "TRAIN.END_EPOCH", "1")
    finally:
        sleeper.kill()
        sleeper.wait()
    left = {name for name, path in files.items() if path.exists()}
    assert left == {"alive", "other_host_fresh", "other_prefix"}


# ----- a full disk ---------------------------------------------------------------------------------------------
@pytest.fixture
def disk_full_after_first_write(monkeypatch):
    """Every checkpoint write after the first fails as on a full disk: the kernel refuses to grow the file (EFBIG
    under a file-size limit), deep inside torch.save."""
    original = Checkpointer.write
    calls = []

    def write(self, payload, path):
        calls.append(path)
        if len(calls) == 1:
            return original(self, payload, path)
        limits = resource.getrlimit(resource.RLIMIT_FSIZE)
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, limits[1]))
        try:
            return original(self, payload, path)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limits)
            signal.signal(signal.SIGXFSZ, handler)

    monkeypatch.setattr(Checkpointer, "write", write)
    return calls


def test_disk_full_names_the_file_removes_the_temporary_and_says_the_previous_checkpoint_is_intact(
        tmp_path, disk_full_after_first_write):
    with pytest.raises(CheckpointWriteError) as error:
        train(tmp_path, "TRAIN.END_EPOCH", "2", "VAL_FREQUENT", "0")
    message = str(error.value)
    first, second = tmp_path / RUN / "standin-0000.model", tmp_path / RUN / "standin-0001.model"
    assert message.startswith(f"{second}: could not be written")
    assert f"the newest checkpoint, {first}, is intact" in message
    assert not list((tmp_path / RUN).glob("*.tmp-*")) and not second.exists()
    assert load_checkpoint(str(first))["train_state"]["epoch"] == 1


def test_disk_full_on_the_first_save_says_no_checkpoint_exists(tmp_path, disk_full_after_first_write):
    disk_full_after_first_write.append("a write that went through")
    with pytest.raises(CheckpointWriteError, match="no checkpoint of this run exists yet"):
        train(tmp_path, "TRAIN.END_EPOCH", "1", "VAL_FREQUENT", "0")
    assert not list((tmp_path / RUN).glob("*.tmp-*"))


# ----- the non-finite guard --------------------------------------------------------------------------------------
def test_nonfinite_stop_names_the_newest_checkpoint_or_says_there_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_NAN", "0,4,8")  # batches 0, 1 and 2 of every epoch without shuffling
    with pytest.raises(NonFiniteLossError, match="no checkpoint of this run exists yet"):
        train(tmp_path / "none", "TRAIN.SHUFFLE", "false")
    monkeypatch.delenv("STANDIN_NAN")
    train(tmp_path / "one", "TRAIN.SHUFFLE", "false", "TRAIN.END_EPOCH", "1")
    monkeypatch.setenv("STANDIN_NAN", "0,4,8")
    with pytest.raises(NonFiniteLossError) as error:
        train(tmp_path / "one", "TRAIN.SHUFFLE", "false", "TRAIN.END_EPOCH", "2")
    assert f"the newest checkpoint, {tmp_path / 'one' / RUN / 'standin-0000.model'}, is intact" in str(error.value)


# ----- slow checkpoint I/O under 2 processes ---------------------------------------------------------------------
def run_two(out: Path, env: dict, *overrides: str) -> tuple[int, str]:
    proc = launch(["./scripts/dist_run_single.sh", "2", ENTRY, YAML, str(out), "OUTPUT_PATH", ".",
                   "TRAIN.DIST_TIMEOUT_S", "5", *overrides], env)
    return proc.wait(timeout=300), proc.stdout.read()


@pytest.mark.slow
def test_a_save_and_a_load_slower_than_the_collective_timeout_do_not_fail_the_run(tmp_path):
    """Rank 0 spends 12 s writing each checkpoint (and later reading one) while the collective timeout is 5 s: the
    other rank waits under TRAIN.CHECKPOINT_TIMEOUT_S instead. With that one shrunk to 5 s too, the run fails."""
    code, output = run_two(tmp_path / "save", {"STANDIN_SAVE_SLEEP": "12"}, "TRAIN.END_EPOCH", "1")
    assert code == 0, output[-3000:]
    code, output = run_two(tmp_path / "save", {"STANDIN_LOAD_SLEEP": "12"}, "TRAIN.END_EPOCH", "2")
    assert code == 0, output[-3000:]
    assert "resumed from" in output
    code, output = run_two(tmp_path / "save", {}, "TRAIN.END_EPOCH", "3", "TRAIN.OPTIMIZER", "SGD")
    assert code != 0 and "ResumeMismatchError" in output, output[-3000:]  # refused on rank 0, no rank left waiting
    code, output = run_two(tmp_path / "short", {"STANDIN_SAVE_SLEEP": "12"}, "TRAIN.END_EPOCH", "1",
                           "TRAIN.CHECKPOINT_TIMEOUT_S", "5")
    assert code != 0, output[-3000:]
    assert "timed out" in output.lower() or "timeout" in output.lower(), output[-3000:]
