"""Run a task's test/val script as users do, through `scripts/nondist_run.sh` (one process) and
`scripts/dist_run_single.sh N` (N gloo processes on CPU), and collect the files each run wrote."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_launcher(nproc: int, script: str, cfg: str, out: Path, args: list[str], timeout: int = 300) -> str:
    """`nondist_run.sh` (nproc 1) or `dist_run_single.sh nproc`, with one thread per process in both cases (float
    results on CPU depend on the thread count; torchrun's default for several processes is 1); returns the output."""
    launcher = ["./scripts/nondist_run.sh"] if nproc == 1 else ["./scripts/dist_run_single.sh", str(nproc)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([*launcher, script, cfg, str(out), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def files_under(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_and_two_processes(tmp_path: Path, script: str, cfg: str, flags: list[str],
                          overrides: list[str]) -> tuple[dict, dict, str]:
    """Run `script flags --result-path <tmp>/{one,two} overrides` once per launcher; the files each run wrote and
    the two-process run's output."""
    one, two = tmp_path / "one", tmp_path / "two"
    run_launcher(1, script, cfg, tmp_path / "model1", [*flags, "--result-path", str(one), *overrides])
    output = run_launcher(2, script, cfg, tmp_path / "model2", [*flags, "--result-path", str(two), *overrides])
    return files_under(one), files_under(two), output
