"""bench/gpu_check.sh --cpu-smoke: the GPU benchmark's code path on tiny CPU shapes, so the script cannot rot."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| (.+?) \| bf16 \| no \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x \| ([\d.]+) \| ([\d.]+) \| "
                 r"([\d.]+) \|$", re.MULTILINE)


def test_cpu_smoke_writes_the_table_between_its_markers(tmp_path):
    from bench.gpu_step import SETTINGS

    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nbefore\n\n<!-- gpu_check:start -->\nold table\n<!-- gpu_check:end -->\n\nafter\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--cpu-smoke", "--results", str(results)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = results.read_text()
    assert text.startswith("# Results\n\nbefore\n") and text.endswith("\n\nafter\n") and "old table" not in text
    rows = ROW.findall(text)
    smoke = SETTINGS["cpu-smoke"]
    assert [r[0] for r in rows] == list(smoke)
    for (name, length, ours, peer, ratio, ours_mfu, peer_mfu, tflops), setting in zip(rows, smoke.values(),
                                                                                      strict=True):
        assert int(length) == setting.seq_len, name
        o, p = float(ours), float(peer)
        assert o > 0 and p > 0 and abs(float(ratio) - o / p) <= 0.006 + 0.006 * (1 + o / p) / p  # 2-decimal cells
        assert float(ours_mfu) >= 0 and float(peer_mfu) >= 0 and float(tflops) >= 0  # tiny shapes: ~0
