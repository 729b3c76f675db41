"""Dependencies point one way: `common/` imports no task folder, and no task folder imports another (a helper two
tasks need moves down into `common/`). Read from the import statements of every file (AST), lazy imports included."""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TASKS = ("pretrain", "vcr", "vqa", "refcoco", "itm", "retrieval")


def imported_packages(path: pathlib.Path) -> set[str]:
    """Top-level package of every absolute import in the file, at any depth (function-level imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def offenders(folder: str, forbidden: set[str]) -> list[str]:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}/: the walk is broken"
    return [f"{p.relative_to(ROOT)} imports {sorted(imported_packages(p) & forbidden)}" for p in files
            if imported_packages(p) & forbidden]


def test_the_walk_sees_lazy_imports(tmp_path):
    source = tmp_path / "example.py"
    source.write_text("import os\n\ndef f():\n    from vqa.task import TASK\n    import refcoco.refer as r\n"
                      "    from . import sibling\n")
    assert imported_packages(source) == {"os", "vqa", "refcoco"}


def test_common_imports_no_task_folder():
    assert offenders("common", set(TASKS)) == []


@pytest.mark.parametrize("task", TASKS)
def test_a_task_imports_no_other_task(task):
    assert offenders(task, set(TASKS) - {task}) == []
