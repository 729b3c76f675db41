"""The training log's speed line and metrics.jsonl (common/engine/log.py, sinks.py) on the stand-in task, whose FLOPs
per step can be worked out by hand."""
from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path

import pytest

from common.config import load_config
from common.engine.dist import DistEnv
from common.engine.log import SpeedMeter, TimedBatches
from common.engine.sinks import MetricsFile, latest_by_step, read_metrics
from common.engine.trainer import fit
from tests.common.engine.standin_task import STANDIN

ROOT = Path(__file__).resolve().parents[3]
YAML = str(ROOT / "tests/common/engine/standin.yaml")
# Linear(6, 16) on x (no input gradient: forward + weight gradient), Linear(16, 1) (forward + both gradients), batch 4:
# 2·4·6·16·2 + 2·4·16·1·3 FLOPs per optimizer step.
STANDIN_STEP_FLOPS = 2 * 4 * 6 * 16 * 2 + 2 * 4 * 16 * 1 * 3


def run(out: Path, *overrides: str):
    cfg = load_config(YAML, ["OUTPUT_PATH", str(out), *overrides])
    return fit(STANDIN, cfg, DistEnv(), "standin")


def metrics_path(out: Path) -> Path:
    return out / "standin" / "train_train" / "metrics.jsonl"


def test_speed_lines_show_mfu_and_data_wait_and_metrics_jsonl_holds_them(tmp_path, caplog):
    with caplog.at_level("INFO"):
        state = run(tmp_path, "TRAIN.PEAK_TFLOPS", "2.5e-6")
    lines = [r.getMessage() for r in caplog.records if "Speed:" in r.getMessage()]
    assert lines and all("MFU: " in ln and "Data-wait: " in ln and "TFLOP/s: " in ln and "Peak-mem: " in ln
                         for ln in lines)
    records = read_metrics(str(metrics_path(tmp_path)))
    header, train = records[0], [r for r in records if r["kind"] == "train"]
    assert header["kind"] == "run" and header["peak_tflops"] == 2.5e-6 and header["peak_source"] == "TRAIN.PEAK_TFLOPS"
    assert header["world_size"] == 1 and header["devices"][0].startswith("cpu") and header["config"]["RNG_SEED"] == 3
    assert header["packages"]["torch"] and "commit" in header["git"]
    assert len(train) == len(lines) == 3 * 4  # 3 epochs of 32 samples / batch 4 = 8 steps, a line every 2
    for record in train:
        assert record["flops_per_step"] == STANDIN_STEP_FLOPS
        assert record["mfu"] == pytest.approx(record["tflops"] / 2.5e-6)
        assert 0 <= record["data_wait"] <= 1 and record["peak_mem_gib"] > 0 and record["samples_per_s"] > 0
        assert set(record["metrics"]) >= {"Loss", "grad_norm"}
    assert [r["step"] for r in train] == sorted(r["step"] for r in train) and train[-1]["step"] == state.global_step
    val = [r for r in records if r["kind"] == "val"]
    assert [r["epoch"] for r in val] == [0, 1, 2] and all(set(r["metrics"]) == {"NegMSE"} for r in val)
    assert [r["step"] for r in val] == [8, 16, 24]


def test_a_resumed_run_appends_a_new_header(tmp_path):
    run(tmp_path, "TRAIN.END_EPOCH", "1", "TRAIN.PEAK_TFLOPS", "1")
    first = read_metrics(str(metrics_path(tmp_path)))
    run(tmp_path, "TRAIN.END_EPOCH", "2", "TRAIN.PEAK_TFLOPS", "1")
    both = read_metrics(str(metrics_path(tmp_path)))
    assert both[:len(first)] == first
    assert [r["kind"] for r in both].count("run") == 2
    steps = [r["step"] for r in latest_by_step(r for r in both if r["kind"] == "train")]
    assert steps == sorted(set(steps)) and steps[-1] > max(r["step"] for r in first if r["kind"] == "train")


def test_data_wait_share_is_the_time_blocked_on_the_loader():
    class SlowLoader:
        def __len__(self):
            return 4

        def __iter__(self):
            for i in range(4):
                time.sleep(0.03)
                yield i

    meter = SpeedMeter(samples_per_step=1, device=__import__("torch").device("cpu"))
    for _ in TimedBatches(SlowLoader(), meter):
        time.sleep(0.09)  # the "step"
        meter.steps += 1
    figures = meter.read()
    assert figures["steps"] == 4 and 0.15 < figures["data_wait"] < 0.35  # 0.03 of every 0.12 s: 0.25
    assert meter.read()["data_wait"] < 0.05  # read() starts a new interval


def test_metrics_file_appends_after_a_line_cut_by_a_crash(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "run"}\n{"kind": "train", "st')
    sink = MetricsFile(str(path))
    sink.write({"kind": "run", "step": 0})
    sink.close()
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1]) == {"kind": "run", "step": 0} and len(lines) == 3
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):  # a bad line that is not the last one is an error
        read_metrics(str(path))
    path.write_text('{"kind": "run"}\n{"kind": "train", "st')
    assert read_metrics(str(path)) == [{"kind": "run"}]  # a cut last line is skipped


def test_report_to_names_a_missing_package_clearly(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # importing it raises ImportError
    with pytest.raises(RuntimeError, match=r"TRAIN.REPORT_TO names 'wandb' but the wandb package is not installed"):
        run(tmp_path, "TRAIN.REPORT_TO", "[tensorboard, wandb]", "TRAIN.END_EPOCH", "1")
    with pytest.raises(ValueError, match=r"TRAIN.REPORT_TO: unknown sink\(s\) \['mlflow'\]"):
        run(tmp_path, "TRAIN.REPORT_TO", "[mlflow]", "TRAIN.END_EPOCH", "1")


def test_trackio_and_wandb_get_the_records_of_metrics_jsonl(tmp_path, monkeypatch):
    """Stand-in modules with the packages' calls (init / log(step=) / finish) record what the sinks send: the same
    train and val figures as metrics.jsonl, by global step."""
    calls: dict[str, list] = {"trackio": [], "wandb": []}

    class WandbRun:
        def log(self, values, step):
            calls["wandb"].append((step, values))

        def finish(self):
            calls["wandb"].append("finish")

    trackio = types.SimpleNamespace(init=lambda **kw: calls["trackio"].append(("init", kw["project"])),
                                    log=lambda values, step: calls["trackio"].append((step, values)),
                                    finish=lambda: calls["trackio"].append("finish"))
    wandb = types.SimpleNamespace(init=lambda **kw: WandbRun())
    monkeypatch.setitem(sys.modules, "trackio", trackio)
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    run(tmp_path, "TRAIN.REPORT_TO", "[trackio, wandb]", "TRAIN.END_EPOCH", "1", "TRAIN.PEAK_TFLOPS", "1")
    records = [r for r in read_metrics(str(metrics_path(tmp_path))) if r["kind"] in ("train", "val")]
    for name in ("trackio", "wandb"):
        sent = [c for c in calls[name] if isinstance(c, tuple) and c[0] != "init"]
        assert calls[name][-1] == "finish" and len(sent) == len(records) + 1  # + the epoch_train record
        train_sent = [values for step, values in sent if "train/Loss" in values]
        assert [v["train/Loss"] for v in train_sent] == [r["metrics"]["Loss"] for r in records if r["kind"] == "train"]
        assert [v["train/mfu"] for v in train_sent] == [r["mfu"] for r in records if r["kind"] == "train"]
