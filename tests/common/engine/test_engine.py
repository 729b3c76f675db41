"""The engine must not change the maths: each feature is compared with the plain run it claims to equal."""
from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.config import load_config
from common.engine.amp import MixedPrecision
from common.engine.checkpoint import load_checkpoint
from common.engine.dist import DistEnv
from common.engine.run import wrap_module
from common.engine.trainer import NonFiniteLossError, fit, is_step_finite, train_step
from tests.common.engine.standin_task import STANDIN, StandInModule

ROOT = Path(__file__).resolve().parents[3]
YAML = str(ROOT / "tests/common/engine/standin.yaml")
ENTRY = str(ROOT / "tests/common/engine/standin_train.py")


def run_fit(out: Path, *overrides: str):
    cfg = load_config(YAML, ["OUTPUT_PATH", str(out), *overrides])
    state = fit(STANDIN, cfg, DistEnv(), "standin")
    return state, final_weights(out)


def final_weights(out: Path) -> dict:
    files = sorted(glob.glob(str(out / "standin/train_train/standin-0*.model")))
    return load_checkpoint(files[-1])["state_dict"]


def assert_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


def test_accumulation_equals_big_batch(tmp_path):
    common = ("TRAIN.SHUFFLE", "false", "TRAIN.OPTIMIZER", "SGD", "TRAIN.END_EPOCH", "2")
    _, big = run_fit(tmp_path / "big", *common, "TRAIN.BATCH_IMAGES", "8", "TRAIN.LR", "0.01")
    _, acc = run_fit(tmp_path / "acc", *common, "TRAIN.BATCH_IMAGES", "4", "TRAIN.GRAD_ACCUMULATE_STEPS", "2",
                     "TRAIN.LR", "0.01")
    assert_close(acc, big, atol=1e-6)


def test_global_batch_derives_accumulation(tmp_path):
    common = ("TRAIN.SHUFFLE", "false", "TRAIN.OPTIMIZER", "SGD", "TRAIN.END_EPOCH", "1", "TRAIN.LR", "0.01")
    _, big = run_fit(tmp_path / "big", *common, "TRAIN.BATCH_IMAGES", "16")
    state, glob_batch = run_fit(tmp_path / "glob", *common, "TRAIN.BATCH_IMAGES", "4", "TRAIN.GLOBAL_BATCH", "16")
    assert state.global_step == 2  # 32 samples / 16 per update
    assert_close(glob_batch, big, atol=1e-6)


def launch(args: list[str], env_extra: dict | None = None, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)


def test_sigkill_then_auto_resume_is_bitwise_identical(tmp_path):
    straight = tmp_path / "straight"
    overrides = ["TRAIN.LR_SCHEDULE", "step", "TRAIN.LR_STEP", "1,2", "NETWORK.VLBERT.hidden_dropout_prob", "0.3"]
    _, expected = run_fit(straight, *overrides)
    killed = tmp_path / "killed"
    cmd = [sys.executable, ENTRY, "--cfg", YAML, "OUTPUT_PATH", str(killed), *overrides]
    proc = launch(cmd, {"STANDIN_SLEEP": "0.05"})
    first = killed / "standin/train_train/standin-0000.model"
    deadline = time.time() + 60
    while not first.exists() and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first.exists() and not (killed / "standin/train_train/standin-0002.model").exists()
    resumed = launch(cmd)
    output = resumed.communicate(timeout=120)[0]
    assert resumed.returncode == 0, output
    assert "resumed from" in output
    got = final_weights(killed)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_truncated_newest_checkpoint_is_reported_and_previous_used(tmp_path, caplog):
    run_fit(tmp_path, "TRAIN.END_EPOCH", "2")
    newest = tmp_path / "standin/train_train/standin-0001.model"
    newest.write_bytes(newest.read_bytes()[:100])
    with caplog.at_level("INFO"):
        state, _ = run_fit(tmp_path, "TRAIN.END_EPOCH", "2")
    assert str(newest) in caplog.text and "resumed from" in caplog.text
    assert "standin-0000.model" in caplog.text.split("resumed from")[1]
    assert state.epoch == 2


def test_nonfinite_step_is_skipped_and_weights_unchanged(caplog):
    torch.manual_seed(0)
    module = StandInModule(0.0)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    amp = MixedPrecision(torch.device("cpu"))
    x = torch.randn(4, 6)
    x[1, 0] = float("nan")
    batch = {"x": x, "y": torch.zeros(4, 1), "index": torch.tensor([10, 11, 12, 13])}
    before = {k: v.clone() for k, v in module.state_dict().items()}
    stats = train_step(module, [batch], optimizer, amp, -1.0, [], torch.device("cpu"))
    assert not is_step_finite(stats, amp)
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key])


def test_three_nonfinite_steps_in_a_row_stop_the_run(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("STANDIN_NAN", "0,4,8")  # batches 0, 1 and 2 without shuffling
    with caplog.at_level("WARNING"), pytest.raises(NonFiniteLossError, match="3 consecutive"):
        run_fit(tmp_path, "TRAIN.SHUFFLE", "false", "TRAIN.MAX_NONFINITE_STEPS", "3")
    assert "samples [0, 1, 2, 3]" in caplog.text and "samples [8, 9, 10, 11]" in caplog.text


def test_one_nonfinite_batch_is_skipped_and_training_goes_on(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("STANDIN_NAN", "5")
    with caplog.at_level("WARNING"):
        state, weights = run_fit(tmp_path, "TRAIN.SHUFFLE", "false", "TRAIN.END_EPOCH", "1")
    assert "samples [4, 5, 6, 7]" in caplog.text
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_bf16_autocast_step_on_cpu():
    module = StandInModule(0.0)
    amp = MixedPrecision(torch.device("cpu"), torch.bfloat16)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    batch = {"x": torch.randn(4, 6), "y": torch.zeros(4, 1)}
    with amp.autocast():
        assert module.net[0](batch["x"]).dtype == torch.bfloat16
    before = module.net[0].weight.clone()
    stats = train_step(module, [batch], optimizer, amp, 1.0, [], torch.device("cpu"))
    assert is_step_finite(stats, amp)
    amp.step(optimizer, stats["grad_norm"])
    assert not torch.equal(before, module.net[0].weight)


def test_fp16_scaler_skips_inf_gradient_and_reports(caplog):
    module = StandInModule(0.0)
    amp = MixedPrecision(torch.device("cpu"), torch.float16, init_scale=128.0)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    amp.backward(module({"x": torch.randn(4, 6), "y": torch.zeros(4, 1)})["loss"])
    module.net[0].weight.grad[0, 0] = float("inf")  # one overflowing gradient
    before = module.net[0].weight.clone()
    norm = amp.unscale_and_clip(optimizer, list(module.parameters()), 1.0)
    amp.step(optimizer, norm)
    assert torch.equal(before, module.net[0].weight)
    with caplog.at_level("WARNING"):
        assert amp.report_skipped() == 1
    assert "skipped 1 update" in caplog.text and amp.scaler.get_scale() < 128.0



def test_compile_on_cpu_warns_that_it_measured_slower(caplog):
    from easydict import EasyDict

    with caplog.at_level("WARNING"):
        wrap_module(StandInModule(0.0), EasyDict(TRAIN=dict(COMPILE=False)), DistEnv())
        assert "TRAIN.COMPILE" not in caplog.text
        wrap_module(StandInModule(0.0), EasyDict(TRAIN=dict(COMPILE=True)), DistEnv())  # compiles lazily: no run
    assert "TRAIN.COMPILE on CPU" in caplog.text and "bench/RESULTS.md" in caplog.text

@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(tmp_path):
    common = ["TRAIN.SHUFFLE", "false", "TRAIN.OPTIMIZER", "SGD", "TRAIN.LR", "0.01", "TRAIN.END_EPOCH", "2"]
    _, one = run_fit(tmp_path / "one", *common, "TRAIN.BATCH_IMAGES", "8")
    proc = launch(["./scripts/dist_run_single.sh", "2", ENTRY, YAML, str(tmp_path / "two"), "OUTPUT_PATH", ".",
                   *common, "TRAIN.BATCH_IMAGES", "4"])
    output = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, output
    two = final_weights(tmp_path / "two")
    assert_close(two, one, atol=1e-5)


def test_nondist_launcher_runs_end_to_end(tmp_path):
    proc = launch(["./scripts/nondist_run.sh", ENTRY, YAML, str(tmp_path), "TRAIN.END_EPOCH", "1",
                   "OUTPUT_PATH", "out"])
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output
    assert (tmp_path / "out/standin/train_train/standin-0000.model").exists()


@pytest.mark.slow
def test_crashing_rank_fails_the_launch_quickly(tmp_path):
    start = time.time()
    proc = launch(["./scripts/dist_run_single.sh", "2", ENTRY, YAML, str(tmp_path)], {"STANDIN_CRASH_RANK": "1"})
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0
    assert "stand-in crash" in output
    assert time.time() - start < 60
