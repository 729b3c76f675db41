"""The repository's layout rules: the tree installs as a package, so no file edits `sys.path`."""
from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
SKIP = {".venv", ".git", "data/toy", "data/toy_demo", "output", "demo_output"}


def python_files() -> list[pathlib.Path]:
    files = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if not any(rel == s or rel.startswith(s + "/") for s in SKIP):
            files.append(path)
    return files


def test_no_sys_path_edits():
    pattern = re.compile(r"sys\.path\.(insert|append|extend)|sys\.path\s*=|sys\.path\s*\+=")
    offenders = [p.relative_to(ROOT).as_posix() for p in python_files()
                 if pattern.search(p.read_text(encoding="utf-8"))]
    assert python_files(), "no Python files found: the walk is broken"
    assert offenders == [], f"files that edit sys.path (install with `pip install -e .` instead): {offenders}"
