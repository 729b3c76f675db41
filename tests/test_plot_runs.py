"""scripts/plot_runs.py: the curves it draws are the runs' records (a resumed run's repeated steps once)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("plot_runs", ROOT / "scripts" / "plot_runs.py")
plot_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot_runs)


def write_run(folder: Path, losses: dict[int, float], val: dict[int, float]) -> Path:
    folder.mkdir(parents=True)
    lines = [{"kind": "run"}] + [{"kind": "train", "step": s, "epoch": 0, "metrics": {"Loss": v, "grad_norm": 1.0}}
                                 for s, v in losses.items()]
    lines += [{"kind": "val", "step": s, "epoch": 0, "metrics": {"AnsLoss": v, "Acc": 0.5}} for s, v in val.items()]
    path = folder / "metrics.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def curves(figure) -> dict[str, dict[str, tuple[list, list]]]:
    return {ax.get_title(): {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines}
            for ax in figure.axes if ax.get_title()}


def test_panels_per_metric_and_per_run_hold_the_records(tmp_path):
    a = write_run(tmp_path / "cfg_a" / "train_train", {1: 3.0, 2: 2.5, 3: 2.0}, {3: 2.2})
    b = tmp_path / "b.jsonl"
    b.write_text(write_run(tmp_path / "b", {1: 4.0, 2: 3.0}, {2: 3.1}).read_text()
                 + json.dumps({"kind": "run"}) + "\n"  # resumed from step 1: step 2 again, then 3
                 + "".join(json.dumps({"kind": "train", "step": s, "metrics": {"Loss": v}}) + "\n"
                           for s, v in ((2, 2.9), (3, 2.7))))
    runs = {plot_runs.label_of(str(p)): plot_runs.run_series(str(p)) for p in (a, b)}
    assert list(runs) == ["cfg_a/train_train", "b"]
    by_metric = curves(plot_runs.draw(runs))
    assert by_metric["train/Loss"] == {"cfg_a/train_train": ([1, 2, 3], [3.0, 2.5, 2.0]),
                                       "b": ([1, 2, 3], [4.0, 2.9, 2.7])}
    assert by_metric["val/AnsLoss"]["b"] == ([2], [3.1]) and "train/grad_norm" not in by_metric
    by_run = curves(plot_runs.draw(runs, layout="run"))
    assert set(by_run) == {"cfg_a/train_train", "b"}
    assert by_run["cfg_a/train_train"] == {"train/Loss": ([1, 2, 3], [3.0, 2.5, 2.0]), "val/AnsLoss": ([3], [2.2])}


def test_the_command_writes_a_png(tmp_path):
    run = write_run(tmp_path / "x" / "y", {1: 1.0, 2: 0.5}, {2: 0.6})
    out = tmp_path / "plot.png"
    plot_runs.main([str(tmp_path / "x"), str(run), "--labels", "one,two", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="need as many distinct labels"):
        plot_runs.main([str(run), "--labels", "a,b", "--out", str(out)])
