"""Atomic writes (`common/atomic_write.py`): a failure in the middle of a write leaves the previous file as it was
and no temporary file, for the helper and for every writer of results and caches built on it; no other code
writes files in place."""
from __future__ import annotations

import ast
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from common.atomic_write import open_atomic, write_bytes_atomic, write_json_atomic, write_text_atomic

ROOT = Path(__file__).resolve().parents[2]


class Interrupted(Exception):
    """Stands for anything that stops a write half-way: a full disk, Ctrl-C, a value that does not serialise."""


def interrupt_after(module, name: str, monkeypatch, calls: int = 1) -> None:
    """Make `module.name` (a writer's low-level step) do its work `calls` times, then raise mid-file."""
    original = getattr(module, name)
    seen = {"n": 0}

    def failing(*args, **kwargs):
        seen["n"] += 1
        if seen["n"] > calls:
            raise Interrupted(f"{name} interrupted")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


def test_open_atomic_keeps_the_old_file_when_the_block_fails(tmp_path):
    path = tmp_path / "out" / "r.txt"
    write_text_atomic(path, "old\n")
    with pytest.raises(Interrupted), open_atomic(path) as handle:
        handle.write("half of the new")
        handle.flush()
        assert path.read_text() == "old\n"  # readers still see the old file during the write
        raise Interrupted
    assert path.read_text() == "old\n" and os.listdir(path.parent) == ["r.txt"]
    write_bytes_atomic(path, b"new")
    write_json_atomic(tmp_path / "j.json", {"a": 1})
    assert path.read_bytes() == b"new" and json.loads((tmp_path / "j.json").read_text()) == {"a": 1}
    with pytest.raises(ValueError, match="mode must start with 'w'"), open_atomic(path, "a"):
        pass


def written_twice(tmp_path, write_good, write_interrupted) -> tuple[dict, dict]:
    """Folder contents (name -> bytes) after a good write, then after an interrupted second write."""
    write_good()
    before = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(Interrupted):
        write_interrupted()
    after = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    return before, after


def test_vqa_result_file(tmp_path, monkeypatch):
    from vqa import predictions

    path = str(tmp_path / "r_vqa2_val2014.json")
    records = predictions.result_records([1, 2], ["yes", "no"])
    good = lambda: predictions.write_result_file(records, path)  # noqa: E731
    bad = lambda: (interrupt_after(json, "dump", monkeypatch, 0), predictions.write_result_file(records * 0, path))  # noqa: E731
    before, after = written_twice(tmp_path, good, bad)
    assert before == after and json.loads(after["r_vqa2_val2014.json"]) == records


def test_refcoco_result_file(tmp_path, monkeypatch):
    from refcoco import predictions

    records = predictions.prediction_records([7, 7], np.array([[0, 0, 5, 5], [1, 1, 4, 4]]))
    path = str(tmp_path / "r_refcoco+_val.json")
    before, after = written_twice(
        tmp_path, lambda: predictions.write_predictions_json(records, path),
        lambda: (interrupt_after(json, "dump", monkeypatch, 0), predictions.write_predictions_json([], path)))
    assert before == after and len(before) == 1


REAL_CSV_WRITER = csv.writer


class HalfCSVWriter:
    """csv.writer that writes (and flushes) rows until `stop_at`, then fails: a write stopped half-way."""

    def __init__(self, handle, stop_at: str):
        self.handle, self.writer, self.stop_at = handle, REAL_CSV_WRITER(handle), stop_at

    def writerow(self, row):
        self.writer.writerow(row)
        self.handle.flush()
        if row[0] == self.stop_at:
            raise Interrupted("row writer interrupted")


def test_vcr_leaderboard_csv(tmp_path, monkeypatch):
    """The row writer fails after the header and three rows of the new file have reached the disk."""
    from vcr import predictions

    ids, path = [f"val-{i}" for i in range(5)], str(tmp_path / "t_Q2A.csv")
    logits = np.arange(20, dtype=np.float32).reshape(5, 4)

    def bad():
        monkeypatch.setattr(predictions.csv, "writer", lambda handle: HalfCSVWriter(handle, "val-2"))
        predictions.write_q2a_csv(path, ids, logits + 1)

    before, after = written_twice(tmp_path, lambda: predictions.write_q2a_csv(path, ids, logits), bad)
    assert before == after and after["t_Q2A.csv"].decode().count("\n") == 6


def test_vqa_eval_report(tmp_path, monkeypatch):
    """`vqa/eval.py --json`: a report interrupted half-way keeps the previous report."""
    from vqa import eval as vqa_eval

    questions = {"questions": [{"question_id": 1, "image_id": 5, "question": "what?"}]}
    annotations = {"annotations": [{"question_id": 1, "image_id": 5, "answer_type": "other", "question_type": "what",
                                    "multiple_choice_answer": "red",
                                    "answers": [{"answer": "red", "answer_id": k + 1} for k in range(10)]}]}
    for name, data in (("q.json", questions), ("a.json", annotations),
                       ("r.json", [{"question_id": 1, "answer": "red"}])):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_text(json.dumps(data))
    args = ["--result", str(tmp_path / "in" / "r.json"), "--questions", str(tmp_path / "in" / "q.json"),
            "--annotations", str(tmp_path / "in" / "a.json"), "--json", str(tmp_path / "report.json")]
    vqa_eval.main(args)
    before = (tmp_path / "report.json").read_bytes()
    interrupt_after(json, "dump", monkeypatch, 0)
    with pytest.raises(Interrupted):
        vqa_eval.main(args)
    assert (tmp_path / "report.json").read_bytes() == before and json.loads(before)["overall"] == 100.0
    assert sorted(os.listdir(tmp_path)) == ["in", "report.json"]


# ---- nothing else writes in place ------------------------------------------------------------------------------
ARRAY_OWNERS = ("np", "numpy", "torch")  # np.save(path, ...), torch.save(obj, path)
SAVERS = {"savefig", "save_file", "to_csv"}  # matplotlib, safetensors, pandas: each takes a path
PATH_METHODS = {"write_text", "write_bytes"}  # pathlib
ALLOWED = {
    "common/atomic_write.py": "the helper itself",
    "common/engine/checkpoint.py": "save_atomic: the checkpoints' own temp file + fsync + os.replace",
    "common/engine/dcp_checkpoint.py": "DCP folders: written as {name}.dcp.tmp (trainer.pt through save_atomic) and "
                                       "renamed to {name}.dcp only once every rank's shard is complete",
    "common/engine/sinks.py": "MetricsFile: metrics.jsonl is an append-only log (one flushed line per record, a "
                              "resumed run appends; a line cut by a crash is closed before the next)",
}


def _write_mode(call: ast.Call) -> bool:
    mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
    return isinstance(mode, ast.Constant) and isinstance(mode.value, str) and any(c in mode.value for c in "wax+")


def _atomic_handles(tree: ast.AST) -> set[str]:
    """Names bound by `with open_atomic(...) as name`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With):
            for item in node.items:
                func = item.context_expr.func if isinstance(item.context_expr, ast.Call) else None
                called = getattr(func, "id", getattr(func, "attr", None))
                if called == "open_atomic" and isinstance(item.optional_vars, ast.Name):
                    names.add(item.optional_vars.id)
    return names


def _saves_to_a_path(call: ast.Call, name: str, owner: str) -> bool:
    """np/torch saves, matplotlib/safetensors/pandas savers, pathlib writes, and PIL's `image.save(..., format=)`."""
    pil = name == "save" and any(k.arg in ("format", "quality") for k in call.keywords)
    return ((name.startswith("save") and owner in ARRAY_OWNERS) or name in SAVERS or pil
            or (name in PATH_METHODS and isinstance(call.func, ast.Attribute)))


def in_place_writes(source: str, rel: str) -> list[str]:
    tree = ast.parse(source, rel)
    handles = _atomic_handles(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
        if name == "open" and owner in ("", "io") and _write_mode(node):
            found.append(f"{rel}:{node.lineno} open(..., write mode)")
        elif (owner, name) in {("os", "replace"), ("os", "rename"), ("tempfile", "mkstemp"),
                               ("tempfile", "NamedTemporaryFile")}:
            found.append(f"{rel}:{node.lineno} {owner}.{name}")
        elif _saves_to_a_path(node, name, owner) and not (
                node.args and isinstance(node.args[-1 if owner == "torch" else 0], ast.Name)
                and node.args[-1 if owner == "torch" else 0].id in handles):
            found.append(f"{rel}:{node.lineno} {owner + '.' if owner else ''}{name}(<path>)")
    return sorted(found, key=lambda line: int(line.split(":")[1].split()[0]))


def test_the_scan_finds_in_place_writes():
    assert in_place_writes("with open(p, 'w') as f:\n    f.write('x')\nnp.save(p, a)\n", "x.py") == [
        "x.py:1 open(..., write mode)", "x.py:3 np.save(<path>)"]
    assert in_place_writes("with open_atomic(p, 'wb') as f:\n    np.save(f, a)\nopen(p).read()\n", "x.py") == []


def test_no_module_writes_a_file_in_place():
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith((".venv/", "tests/")) or rel in ALLOWED:
            continue
        offenders += in_place_writes(path.read_text(), rel)
    assert offenders == []
