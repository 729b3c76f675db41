"""Draw the curves of any runs side by side into a PNG, from their metrics.jsonl files (common/engine/sinks.py).

    python scripts/plot_runs.py RUN_A/metrics.jsonl RUN_B/metrics.jsonl --out compare.png       # a panel per metric
    python scripts/plot_runs.py docs/reference_runs/*.jsonl --layout run --out docs/reference_runs.png

A run may be given as its metrics.jsonl or as a folder holding one (searched recursively). `--layout metric` (the
default) overlays the runs in one panel per metric, to compare runs of one task; `--layout run` gives each run its
own panel with its training loss and validation losses. A resumed run's repeated steps count once (the later ones).
"""
from __future__ import annotations

import argparse
import glob
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display needed

import matplotlib.pyplot as plt  # noqa: E402 (after the backend choice)

from common.atomic_write import open_atomic  # noqa: E402
from common.engine.sinks import latest_by_step, read_metrics  # noqa: E402

Series = dict[str, list[tuple[int, float]]]


def metrics_file(path: str) -> str:
    if os.path.isfile(path):
        return path
    found = sorted(glob.glob(os.path.join(path, "**", "metrics.jsonl"), recursive=True))
    if not found:
        raise SystemExit(f"plot_runs: no metrics.jsonl at or under {path}")
    return found[-1]


def run_series(path: str) -> Series:
    """{"train/Loss": [(step, value), ...], "train/grad_norm": ..., "val/<metric>": ...} of one metrics.jsonl."""
    records = read_metrics(path)
    series: Series = {}
    for kind in ("train", "val"):
        for record in latest_by_step(r for r in records if r["kind"] == kind and r.get("step") is not None):
            for name, value in record["metrics"].items():
                if isinstance(value, (int, float)):
                    series.setdefault(f"{kind}/{name}", []).append((record["step"], float(value)))
    return series


def label_of(path: str) -> str:
    """`<cfg name>/<split>_train` for a run folder's metrics.jsonl, else the file name without its extension."""
    if os.path.basename(path) != "metrics.jsonl":
        return os.path.splitext(os.path.basename(path))[0]
    folder = os.path.dirname(os.path.abspath(path))
    return f"{os.path.basename(os.path.dirname(folder))}/{os.path.basename(folder)}"


def draw(runs: dict[str, Series], metrics: Sequence[str] | None = None, layout: str = "metric") -> plt.Figure:
    """The figure: one panel per metric (runs overlaid) or one per run (its losses overlaid)."""
    if layout == "metric":
        names = list(metrics or dict.fromkeys(k for s in runs.values() for k in s if not k.endswith("grad_norm")))
        panels = {name: {label: s[name] for label, s in runs.items() if name in s} for name in names}
    else:
        panels = {label: {k: v for k, v in s.items() if (k in metrics if metrics else "Loss" in k.split("/")[-1])}
                  for label, s in runs.items()}
    columns = min(len(panels), 3) or 1
    rows = -(-len(panels) // columns) or 1
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.4 * rows), squeeze=False)
    for ax, (title, lines) in zip(axes.flat, panels.items(), strict=False):
        for label, points in lines.items():
            marker = "o" if label.startswith("val/") or len(points) < 3 else None
            ax.plot([s for s, _ in points], [v for _, v in points], marker=marker, markersize=4, label=label)
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    figure.tight_layout()
    return figure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="metrics.jsonl files or run folders")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--layout", choices=("metric", "run"), default="metric")
    parser.add_argument("--labels", default="", help="comma list, one label per run (default: from the paths)")
    parser.add_argument("--metrics", default="", help='comma list, e.g. "train/Loss,val/SoftAcc" (default: losses '
                                                      'and validation metrics)')
    args = parser.parse_args(argv)
    paths = [metrics_file(p) for p in args.runs]
    labels = [x for x in args.labels.split(",") if x] or [label_of(p) for p in paths]
    if len(labels) != len(paths) or len(set(labels)) != len(labels):
        raise SystemExit(f"plot_runs: {len(paths)} runs need as many distinct labels, got {labels} (--labels)")
    runs = {label: run_series(p) for label, p in zip(labels, paths, strict=True)}
    figure = draw(runs, [m for m in args.metrics.split(",") if m] or None, args.layout)
    with open_atomic(args.out, "wb") as handle:
        figure.savefig(handle, format="png", dpi=110)
    print(f"{args.out}: {len(runs)} run(s)")


if __name__ == "__main__":
    main()
