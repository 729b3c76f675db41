"""cfgs/README.md lists every original config with the batch and effective LR the config really gives, and the
paper's numbers as cfgs/paper_results.yaml holds them (the file scripts/eval_suite.py reads)."""
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from common.config import load_config
from pretrain.config import add_pretrain_defaults
from refcoco.config import add_refcoco_defaults
from vcr.config import add_vcr_defaults
from vqa.config import add_vqa_defaults

ROOT = Path(__file__).resolve().parents[1]
ADDERS = {"pretrain": add_pretrain_defaults, "vcr": add_vcr_defaults, "vqa": add_vqa_defaults,
          "refcoco": add_refcoco_defaults}
ORIGINALS = sorted(p for p in (ROOT / "cfgs").glob("*/*.yaml") if not p.name.startswith("toy"))


def table_rows() -> dict[str, list[str]]:
    rows = {}
    for line in (ROOT / "cfgs" / "README.md").read_text().splitlines():
        match = re.match(r"\| `([a-z]+/[^`]+\.yaml)` \|(.*)\|$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


@pytest.mark.parametrize("path", ORIGINALS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_table_row_matches_config(path):
    key = f"{path.parent.name}/{path.name}"
    row = table_rows().get(key)
    assert row is not None, f"cfgs/README.md has no row for {key}"
    cfg = load_config(str(path), add_task_defaults=ADDERS[path.parent.name])
    if cfg.TRAIN.END_EPOCH == 0:  # inference-only config
        return
    gpus = int(re.search(r"(\d+)x16G", path.name).group(1))
    per_gpu = cfg.TRAIN.BATCH_IMAGES
    total = gpus * (sum(per_gpu) if isinstance(per_gpu, (list, tuple)) else per_gpu) * cfg.TRAIN.GRAD_ACCUMULATE_STEPS
    assert row[2].endswith(f"= {total}"), f"{key}: table says {row[2]!r}, config gives total batch {total}"
    assert float(row[3]) == pytest.approx(cfg.TRAIN.LR)
    assert float(row[4]) == pytest.approx(cfg.TRAIN.LR * total, rel=1e-3)
    assert row[1] == cfg.TRAIN.OPTIMIZER
    assert row[6] == str(cfg.TRAIN.END_EPOCH)
    assert row[7] == ("yes" if cfg.TRAIN.FP16 else "no")


def eval_suite_module():
    """scripts/eval_suite.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("eval_suite", ROOT / "scripts" / "eval_suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["eval_suite"] = module
    spec.loader.exec_module(module)
    return module


def test_paper_table_is_rendered_from_paper_results_yaml():
    suite = eval_suite_module()
    paper = suite.load_paper_results()
    lines = (ROOT / "cfgs" / "README.md").read_text().splitlines()
    start = lines.index("| task | configs | split | metric | base | large |")
    table = lines[start:lines.index("", start)]
    assert table == suite.render_paper_table(paper)
    for row in paper["rows"]:  # every value has its (split, metric) cell
        for size in ("base", "large"):
            assert row[size] is None or len(row[size]) == len(row["cells"]), row["title"]
