"""Reference runs (docs/reference_runs/, recorded by `python scripts/record_reference_runs.py`): a fresh run of each
reproduces the recorded curves, and a change that moves the maths does not.

What is compared: per step, the training loss and the gradient norm (the norm is far more sensitive to a change in
the forward pass than the loss of a model this young), and every validation loss (AnsLoss, MLMLossWVC, ...).
Accuracies are not compared: near the start of training logits nearly tie, and a last-bit difference may flip an
argmax.

Tolerance: |fresh - recorded| <= RTOL * |recorded|, RTOL = 2e-6. CI runs on another CPU model, where oneDNN, MKL and
ATen's vector code sum in another order, so bit equality is not promised. Measured on these runs (Intel Xeon, AMX,
1 thread), the largest relative deviation of any compared value from the undisturbed run was 3.3e-7, over three ways
of changing the summation order: NETWORK.CPU_ONEDNN_LINEAR false (MKL instead of oneDNN) and 2 threads instead of 1,
each on all six runs, and the whole run at the lowest ISA (ATEN_CPU_CAPABILITY=default, MKL_CBWR=COMPATIBLE,
ONEDNN_MAX_CPU_ISA=SSE41: the order another CPU would use) on vqa and itm. RTOL leaves 6x room above that.

What it catches: a LayerNorm epsilon of 1e-5 instead of BERT's 1e-12 in every LayerNorm moves itm's gradient
norms by 3.1e-5 to 1.1e-4, 15x to 55x the tolerance (test_a_layernorm_epsilon_change_is_caught); in the encoder
layers' LayerNorm alone (common/model/bert_encoder.py) by 4.2e-6 to 5.2e-6 at each of itm's ten steps, 2.1x to 2.6x
the tolerance. vqa's gradient norm, dominated by its answer head, moves by only 6.7e-7 under that smaller change:
itm is the fast run that catches it.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from torch import nn

from common.engine.sinks import latest_by_step, read_metrics

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "docs" / "reference_runs"
RTOL = 2e-6
FAST = ("vqa", "itm")  # precomputed features, a few seconds each; the end-to-end and pre-training runs are slow


def _recorder():
    path = ROOT / "scripts" / "record_reference_runs.py"
    spec = importlib.util.spec_from_file_location("record_reference_runs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RECORDER = _recorder()


def compared_values(records: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """{"train/Loss": [(step, value), ...], "train/grad_norm": ..., "val/<name>Loss": ...}."""
    train = latest_by_step(r for r in records if r["kind"] == "train")
    out = {f"train/{key}": [(r["step"], r["metrics"][key]) for r in train] for key in ("Loss", "grad_norm")}
    for record in latest_by_step(r for r in records if r["kind"] == "val"):
        for name, value in record["metrics"].items():
            if "Loss" in name:  # AnsLoss, CNNRegLoss, MLMLossWVC, ...
                out.setdefault(f"val/{name}", []).append((record["step"], value))
    return out


def deviations(fresh: list[dict], recorded: list[dict]) -> list[str]:
    """Every compared value outside the tolerance, as readable lines (empty: the curves agree)."""
    got, want = compared_values(fresh), compared_values(recorded)
    if got.keys() != want.keys():
        return [f"compared series differ: {sorted(got)} vs recorded {sorted(want)}"]
    problems = []
    for series, points in want.items():
        if [s for s, _ in got[series]] != [s for s, _ in points]:
            problems.append(f"{series}: steps {[s for s, _ in got[series]]} vs recorded {[s for s, _ in points]}")
            continue
        for (step, value), (_, expected) in zip(got[series], points, strict=True):
            if abs(value - expected) > RTOL * abs(expected):
                problems.append(f"{series} step {step}: {value!r} vs recorded {expected!r} "
                                f"(relative {abs(value - expected) / max(abs(expected), 1e-30):.2e} > {RTOL})")
    return problems


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, small_world_root, vocab_only_bert_dir) -> str:
    """The recorder's inputs from the session's toy world and vocabulary (read only), runs written beside them."""
    folder = tmp_path_factory.mktemp("reference_runs")
    os.symlink(small_world_root, folder / "world")
    os.symlink(vocab_only_bert_dir, folder / "bert")
    return str(folder)


def recorded(name: str) -> list[dict]:
    path = RECORDED / f"{name}.jsonl"
    assert path.is_file(), f"{path} is missing: python scripts/record_reference_runs.py --runs {name}"
    return read_metrics(str(path))


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in RECORDER.RUNS])
def test_a_fresh_run_reproduces_the_recorded_curves(name, workdir, caplog):
    with caplog.at_level("INFO"):
        fresh = read_metrics(RECORDER.run_reference(name, workdir))
    problems = deviations(fresh, recorded(name))
    assert not problems, (f"reference run {name} moved (re-record with `python scripts/record_reference_runs.py "
                          f"--runs {name}` if the change is meant to move the maths):\n" + "\n".join(problems[:20]))
    # the toy run's speed lines and records carry MFU, the data-wait share and the rest (TRAIN.PEAK_TFLOPS 1)
    lines = [r.getMessage() for r in caplog.records if "Speed:" in r.getMessage()]
    train = [r for r in fresh if r["kind"] == "train"]
    assert len(lines) == len(train) > 0 and all("MFU: " in ln and "Data-wait: " in ln for ln in lines)
    for record in train:
        assert record["flops_per_step"] > 0 and record["mfu"] == pytest.approx(record["tflops"])
        assert 0 <= record["data_wait"] <= 1 and record["peak_mem_gib"] > 0


def test_a_layernorm_epsilon_change_is_caught(workdir, monkeypatch):
    """Every LayerNorm built with eps 1e-5 instead of 1e-12: the itm run no longer matches its record."""
    class LooseLayerNorm(nn.LayerNorm):
        def __init__(self, shape, eps: float = 1e-5, **kwargs):
            super().__init__(shape, eps=1e-5, **kwargs)

    monkeypatch.setattr(nn, "LayerNorm", LooseLayerNorm)
    problems = deviations(read_metrics(RECORDER.run_reference("itm", workdir)), recorded("itm"))
    assert any("train/grad_norm" in p for p in problems), problems


def test_the_comparison_sees_a_change_in_the_last_digits():
    """The comparison itself: a recorded curve against itself passes, with one gradient norm off by 1e-5 it fails."""
    records = recorded("itm")
    assert deviations(records, records) == []
    train = [r for r in records if r["kind"] == "train"]
    changed = [dict(r, metrics=dict(r["metrics"], grad_norm=r["metrics"]["grad_norm"] * (1 + 1e-5)))
               if r is train[3] else r for r in records]
    assert [p.split(":")[0] for p in deviations(changed, records)] == [f"train/grad_norm step {train[3]['step']}"]
