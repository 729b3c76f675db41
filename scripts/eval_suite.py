"""One command for a set of evaluations: each entry of a suite YAML runs through its task's own test script, and the
suite writes `results.json`, `results.md` (ours beside the paper's numbers, from cfgs/paper_results.yaml) and, per
entry, the files the test script writes (leaderboard files included) under `<out>/<entry name>/`.

    python scripts/eval_suite.py SUITE.yaml [--out DIR]          (make eval SUITE=... EVAL_OUT=...)

Suite YAML (paths relative to the working directory, as the configs' own paths):

    out: ./eval_output                      # optional; --out wins
    entries:
      - task: vqa                           # vqa | vcr | refcoco | retrieval
        config: cfgs/vqa/toy_cpu.yaml       # vcr: {a: Q->A config, r: QA->R config}
        checkpoint: output/.../best.model   # vcr: {a: ..., r: ...}
        split: val2014                      # the image set (vcr: val or test)
        name: vqa-val                       # optional (default task-split), the entry's folder
        args: [--bs, "32"]                  # optional flags of the test script
        overrides: [KEY, VALUE]             # optional config overrides
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from common.atomic_write import open_atomic, write_json_atomic
from common.yaml_io import load_yaml_file

log = logging.getLogger("eval_suite")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_FILE = os.path.join(ROOT, "cfgs", "paper_results.yaml")
TASKS = ("vqa", "vcr", "refcoco", "retrieval")


class SuiteError(ValueError):
    """A suite YAML that does not describe a runnable suite; the message names the file and the entry."""


@dataclass
class Entry:
    task: str
    config: str | dict[str, str]
    checkpoint: str | dict[str, str]
    split: str
    name: str
    args: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)


# ---- the suite file ------------------------------------------------------------------------------------------
def _paths(value, where: str, what: str, two: bool) -> str | dict[str, str]:
    """A path (or, for VCR, {a, r} paths) that exists."""
    if two:
        if not (isinstance(value, dict) and set(value) == {"a", "r"}):
            raise SuiteError(f"{where}: vcr needs `{what}: {{a: <Q->A>, r: <QA->R>}}`, found {value!r}")
        return {k: _paths(v, where, f"{what}.{k}", False) for k, v in value.items()}
    if not isinstance(value, str) or not os.path.isfile(value):
        raise SuiteError(f"{where}: {what} {value!r} is not a file")
    return value


def load_suite(path: str) -> tuple[list[Entry], str | None]:
    """The entries of a suite YAML (checked: task, files, split, unique names) and its `out` folder."""
    document = load_yaml_file(path) or {}
    if not isinstance(document, dict) or not isinstance(document.get("entries"), list) or not document["entries"]:
        raise SuiteError(f"{path}: expected a mapping with a non-empty `entries` list")
    entries = []
    for n, raw in enumerate(document["entries"]):
        where = f"{path}: entries[{n}]"
        if not isinstance(raw, dict) or raw.get("task") not in TASKS:
            found = raw.get("task") if isinstance(raw, dict) else raw
            raise SuiteError(f"{where}: `task` must be one of {TASKS}, found {found!r}")
        unknown = set(raw) - {"task", "config", "checkpoint", "split", "name", "args", "overrides"}
        if unknown or not raw.get("split"):
            raise SuiteError(f"{where}: needs `split`; unknown keys {sorted(unknown)}")
        two = raw["task"] == "vcr"
        entries.append(Entry(raw["task"], _paths(raw.get("config"), where, "config", two),
                             _paths(raw.get("checkpoint"), where, "checkpoint", two), str(raw["split"]),
                             str(raw.get("name") or f"{raw['task']}-{raw['split']}"),
                             [str(a) for a in raw.get("args") or []], [str(o) for o in raw.get("overrides") or []]))
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise SuiteError(f"{path}: entry names must be unique, found {names}")
    return entries, document.get("out")


# ---- each task through its own test script --------------------------------------------------------------------
def run_vqa(entry: Entry, out: str) -> tuple[dict[str, float], str | None]:
    """vqa/test.py (the EvalAI file); vqa/eval.py (official accuracy) when the split has annotations."""
    from common.config import load_config
    from vqa import eval as vqa_eval
    from vqa import test as vqa_test
    from vqa.config import add_vqa_defaults

    path = vqa_test.main(["--cfg", entry.config, "--ckpt", entry.checkpoint, "--split", entry.split,
                          "--result-path", out, "--result-name", entry.name, *entry.args, *entry.overrides])
    cfg = load_config(entry.config, entry.overrides, add_task_defaults=add_vqa_defaults)
    vqa_dir = os.path.join(cfg.DATASET.DATASET_PATH, "vqa")
    questions = os.path.join(vqa_dir, f"v2_OpenEnded_mscoco_{entry.split}_questions.json")
    annotations = os.path.join(vqa_dir, f"v2_mscoco_{entry.split}_annotations.json")
    if not os.path.isfile(annotations):
        return {}, None  # test splits: the EvalAI file is the result
    report = vqa_eval.main(["--result", path, "--questions", questions, "--annotations", annotations,
                            "--json", os.path.join(out, f"{entry.name}_vqa2_{entry.split}_accuracy.json")])
    return {"accuracy": report["overall"], **{f"accuracy {k}": v for k, v in report["perAnswerType"].items()}}, None


def run_vcr(entry: Entry, out: str) -> tuple[dict[str, float], str | None]:
    """vcr/val.py (Q->A, QA->R, Q->AR) for val, vcr/test.py (the leaderboard CSVs) otherwise."""
    from vcr import test as vcr_test
    from vcr import val as vcr_val

    argv = ["--a-cfg", entry.config["a"], "--r-cfg", entry.config["r"], "--a-ckpt", entry.checkpoint["a"],
            "--r-ckpt", entry.checkpoint["r"], "--result-path", out, "--result-name", entry.name, *entry.args]
    if entry.split == "val":
        scores = vcr_val.main(argv + entry.overrides)
        return {name: 100.0 * value for name, value in scores.items()}, None
    if entry.split != "test":
        raise SuiteError(f"entry {entry.name}: vcr splits are val and test, found {entry.split!r}")
    vcr_test.main(argv + entry.overrides)
    return {}, None


def run_refcoco(entry: Entry, out: str) -> tuple[dict[str, float], str | None]:
    """refcoco/test.py: the result JSON and the accuracy; the variant (gt / proposal) is DATASET.TEST_BOXES."""
    from common.config import load_config
    from refcoco import test as refcoco_test
    from refcoco.config import add_refcoco_defaults

    _, accuracy = refcoco_test.main(["--cfg", entry.config, "--ckpt", entry.checkpoint, "--split", entry.split,
                                     "--result-path", out, "--result-name", entry.name, *entry.args,
                                     *entry.overrides])
    cfg = load_config(entry.config, entry.overrides, add_task_defaults=add_refcoco_defaults)
    return {"accuracy": 100.0 * accuracy}, str(cfg.DATASET.TEST_BOXES).split("+")[0]


def run_retrieval(entry: Entry, out: str) -> tuple[dict[str, float], str | None]:
    """retrieval/test.py: R@1/5/10 both ways (percent) and the result JSON."""
    from retrieval import test as retrieval_test

    result = retrieval_test.main(["--cfg", entry.config, "--ckpt", entry.checkpoint, "--split", entry.split,
                                  "--result-path", out, "--result-name", entry.name, *entry.args, *entry.overrides])
    return dict(result.metrics), None


RUNNERS: dict[str, Callable[[Entry, str], tuple[dict[str, float], str | None]]] = {
    "vqa": run_vqa, "vcr": run_vcr, "refcoco": run_refcoco, "retrieval": run_retrieval}


# ---- the paper's numbers -------------------------------------------------------------------------------------
def load_paper_results(path: str = PAPER_FILE) -> dict:
    return load_yaml_file(path)


def _format(values: list[float] | None, decimals: int) -> str:
    return "–" if values is None else " / ".join(f"{v:.{decimals}f}" for v in values)


def render_paper_table(paper: dict) -> list[str]:
    """The Markdown table of cfgs/README.md ("Numbers reported in the paper")."""
    lines = ["| task | configs | split | metric | base | large |", "|---|---|---|---|---|---|"]
    for row in paper["rows"]:
        lines.append(f"| {row['title']} | {row['configs']} | {row['split']} | {row['metric']} | "
                     f"{_format(row['base'], row['decimals'])} | {_format(row['large'], row['decimals'])} |")
    return lines


def paper_split(split: str) -> str:
    """Our image-set name in the paper's words: a trailing year goes (val2014 -> val, test-dev2015 -> test-dev)."""
    return re.sub(r"\d{4}$", "", split)


def paper_cells(paper: dict, task: str, variant: str | None, split: str, metric: str) -> dict[str, str]:
    """{"base": ..., "large": ...} for our (task, split, metric): the paper's value on the same split, else its value
    of the metric on its own split, marked "(split)"; "–" where the paper has none."""
    found: dict[str, str] = {}
    for same_split in (True, False):
        for row in paper["rows"]:
            if row["task"] != task or row.get("variant", variant) != variant:
                continue
            for position, (cell_split, cell_metric) in enumerate(row["cells"]):
                if cell_metric != metric or (cell_split == paper_split(split)) != same_split:
                    continue
                for size in ("base", "large"):
                    if row[size] is not None and size not in found:
                        value = f"{row[size][position]:.{row['decimals']}f}"
                        found[size] = value if same_split else f"{value} ({cell_split})"
    return {size: found.get(size, "–") for size in ("base", "large")}


# ---- the run and its report ----------------------------------------------------------------------------------
def run_entry(entry: Entry, out_root: str) -> dict:
    """Run one entry; its record for results.json (metrics, files written, or the error)."""
    out = os.path.join(out_root, entry.name)
    record = {"name": entry.name, "task": entry.task, "config": entry.config, "checkpoint": entry.checkpoint,
              "split": entry.split, "args": entry.args, "overrides": entry.overrides}
    start = time.time()
    try:
        metrics, variant = RUNNERS[entry.task](entry, out)
        record.update(metrics=metrics, variant=variant)
    except (Exception, SystemExit) as err:  # noqa: BLE001 - one broken entry is reported, the others still run
        log.error("%s failed: %s", entry.name, err)
        record.update(metrics={}, variant=None, error=f"{type(err).__name__}: {err}",
                      traceback=traceback.format_exc())
    record["seconds"] = round(time.time() - start, 1)
    record["files"] = sorted(os.path.relpath(os.path.join(d, f), out_root) for d, _, files in os.walk(out)
                             for f in files) if os.path.isdir(out) else []
    return record


def table_rows(record: dict, paper: dict) -> list[str]:
    """Markdown rows of one entry: one per metric of ours, or per paper metric of the split when we have none."""
    metrics = record["metrics"]
    names = list(metrics) or sorted({m for row in paper["rows"] if row["task"] == record["task"]
                                     for s, m in row["cells"] if s == paper_split(record["split"])})
    note = f"error: {record['error']}" if "error" in record else "no labels: see the files" if not metrics else ""
    rows = []
    for name in names or ["–"]:
        cells = paper_cells(paper, record["task"], record.get("variant"), record["split"], name)
        ours = f"{metrics[name]:.2f}" if name in metrics else "–"
        rows.append(f"| {record['name']} | {record['task']} | {record['split']} | {name} | {ours} | "
                    f"{cells['base']} | {cells['large']} | {note} |")
    return rows


def render_results(records: list[dict], paper: dict) -> str:
    lines = ["# Evaluation results", "", f"Paper numbers: {paper['source']} (`cfgs/paper_results.yaml`); a value in "
             "parentheses is the paper's split where it differs from ours.", "",
             "| entry | task | split | metric | ours | paper base | paper large | note |",
             "|---|---|---|---|---|---|---|---|"]
    for record in records:
        lines += table_rows(record, paper)
    lines += ["", "## Files", ""]
    lines += [f"- `{path}`" for record in records for path in record["files"]]
    return "\n".join(lines) + "\n"


def run_suite(suite_path: str, out_root: str | None = None) -> dict:
    """Run every entry; write `<out>/results.json` and `<out>/results.md`; returns the results document."""
    entries, default_out = load_suite(suite_path)
    out_root = out_root or default_out or "./eval_output"
    os.makedirs(out_root, exist_ok=True)
    paper = load_paper_results()
    records = [run_entry(entry, out_root) for entry in entries]
    document = {"suite": os.path.abspath(suite_path), "entries": records}
    write_json_atomic(os.path.join(out_root, "results.json"), document, indent=1)
    with open_atomic(os.path.join(out_root, "results.md"), encoding="utf-8") as f:
        f.write(render_results(records, paper))
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a suite of evaluations through the tasks' test scripts")
    parser.add_argument("suite", help="suite YAML (see the module docstring)")
    parser.add_argument("--out", default=None, help="output folder (default: the suite's `out`, else ./eval_output)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    document = run_suite(args.suite, args.out)
    failed = [r["name"] for r in document["entries"] if "error" in r]
    if failed:
        log.error("entries that failed: %s (see results.json)", failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
