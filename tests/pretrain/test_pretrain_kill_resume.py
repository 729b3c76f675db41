"""Toy pre-training (map-style captions + text corpus) killed with SIGKILL part-way into epoch 1, after a step
checkpoint, and restarted with the same command: the final checkpoint equals bit for bit that of the run that was
never stopped. Each run is the user's command line (`nondist_run.sh`, `dist_run_single.sh 2`); the kill reaches every
process of the job."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_pretrain_step_resume import PREFIX, RUN, tiny, toy_vocab

from tests.checkpoint_tensors import checkpoint_tensors

REPO = Path(__file__).resolve().parents[2]
CFG = "cfgs/pretrain/toy_cpu.yaml"
# 40 captions / 4 a step = 10 updates an epoch; step files at 3, 6, 9 (epoch 0) and 12, 15, 18 (epoch 1): killed
# after step 12 (epoch 1 after batch 2), eight updates before the epoch ends


def command(launcher: list[str], cfg: str, out: Path, overrides: list[str]) -> list[str]:
    return [*launcher, "pretrain/train_end2end.py", cfg, str(out), *overrides]


def launch(cmd: list[str]) -> subprocess.Popen:
    # idle OpenMP threads sleep instead of spinning: same threads and maths, far less time on a shared machine
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def process_tree(root: int) -> list[int]:
    """`root` and every process below it (torchrun starts its ranks in sessions of their own, out of its group)."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


def kill_all(proc: subprocess.Popen) -> None:
    """`kill -9` of the whole job at once, as when a node is lost: the launcher, every rank and loader worker."""
    for pid in process_tree(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()


def finish(proc: subprocess.Popen) -> str:
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output[-4000:]
    return output


def overrides_for(toy_root: str, bert: Path, vocab_size: int, out: Path, per_process: list[int]) -> list[str]:
    corpus = os.path.join(toy_root, "en_corpus")
    data = ["DATASET.0.DATASET_PATH", os.path.join(toy_root, "conceptual-captions"),
            "DATASET.1.TRAIN_ANNOTATION_FILE", f"{corpus}/bc1g.doc+{corpus}/wiki.doc",
            "DATASET.1.VAL_ANNOTATION_FILE", f"{corpus}/bc1g.doc"]
    return data + tiny(bert, vocab_size, out) + ["TRAIN.BATCH_IMAGES", str(per_process), "TRAIN.AUTO_RESUME", "true"]


def kill_and_resume(launcher: list[str], cfg: str, run: str, prefix: str, overrides: Callable[[Path], list[str]],
                    tmp_path: Path) -> None:
    """Train `cfg` straight to the end; run it again, kill it once its step file of global step 12 (epoch 1 of 10
    updates each) is on disk, restart the same command; compare the final checkpoints of epoch 1 bit for bit."""
    straight, killed, step_file = tmp_path / "straight", tmp_path / "killed", f"{prefix}-e0001-s00000012.model"
    finish(launch(command(launcher, cfg, straight, overrides(straight))))
    assert (straight / run / "steps" / step_file).exists()

    again = command(launcher, cfg, killed, overrides(killed))
    proc, target = launch(again), killed / run / "steps" / step_file
    deadline = time.time() + 600
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    kill_all(proc)
    assert target.exists(), "the run ended before its step checkpoint of epoch 1"
    assert not (killed / run / f"{prefix}-0001.model").exists(), "killed after epoch 1 ended, not inside it"

    output = finish(launch(again))
    resumed_line = next(line for line in output.splitlines() if "resumed from" in line)
    assert f"steps/{prefix}-e0001-s" in resumed_line and "epoch 1 after batch" in resumed_line, resumed_line
    expected, got = (torch.load(out / run / f"{prefix}-0001.model", map_location="cpu", weights_only=True)
                     for out in (straight, killed))
    assert got["train_state"] == expected["train_state"]
    expected_tensors, got_tensors = checkpoint_tensors(expected), checkpoint_tensors(got)
    assert got_tensors.keys() == expected_tensors.keys()
    assert any(key.startswith("state_dict.vlbert.encoder.") for key in got_tensors)
    assert any(key.startswith("optimizer.state.") for key in got_tensors)
    different = [key for key, value in expected_tensors.items() if not torch.equal(got_tensors[key], value)]
    assert not different, f"{len(different)} of {len(expected_tensors)} tensors differ, e.g. {different[:5]}"


def check_kill_and_resume(launcher: list[str], per_process: list[int], toy_root: str, tmp_path: Path) -> None:
    bert = tmp_path / "bert"
    vocab_size = toy_vocab(toy_root, bert)
    kill_and_resume(launcher, CFG, RUN, PREFIX, lambda out: overrides_for(toy_root, bert, vocab_size, out, per_process),
                    tmp_path)


@pytest.mark.slow
def test_pretraining_killed_mid_epoch_resumes_bitwise_in_one_process(toy_root, tmp_path):
    check_kill_and_resume(["./scripts/nondist_run.sh"], [4, 32], toy_root, tmp_path)


@pytest.mark.slow
def test_pretraining_killed_mid_epoch_resumes_bitwise_in_two_processes(toy_root, tmp_path):
    """Two gloo processes with half the per-process batch: the same 10 updates an epoch."""
    check_kill_and_resume(["./scripts/dist_run_single.sh", "2"], [2, 16], toy_root, tmp_path)
