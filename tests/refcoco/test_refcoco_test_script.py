"""refcoco/test.py end to end on the toy world with a tiny random checkpoint: the JSON has one record per
expression, and the printed accuracy equals one recomputed from the JSON and the raw files (toy world's IoU)."""
from __future__ import annotations

import json
import os
import pickle
import re

import pytest
import torch

from data.shape_world.baselines import iou_plus_one
from refcoco.task import TASK
from tests.script_runs import one_and_two_processes

TOY_CFG = os.path.join(os.path.dirname(__file__), "..", "..", "cfgs", "refcoco", "toy_cpu.yaml")
FAST = ["NETWORK.IMAGE_C5_DILATED", "false", "NETWORK.IMAGE_FROZEN_BACKBONE_STAGES", "[1, 2, 3, 4, 5]",
        "NETWORK.VLBERT.visual_scale_object_init", "1.0", "NETWORK.VLBERT.visual_scale_text_init", "1.0"]


def expected_records(toy_root: str, split: str) -> tuple[list[int], dict, dict]:
    folder = os.path.join(toy_root, "coco", "refcoco+")
    with open(os.path.join(folder, "refs(unc).p"), "rb") as f:
        refs = pickle.load(f)
    with open(os.path.join(folder, "instances.json")) as f:
        anns = {a["id"]: a["bbox"] for a in json.load(f)["annotations"]}
    ref_ids = [r["ref_id"] for r in refs if r["split"] == split for _ in r["sentences"]]
    return ref_ids, {r["ref_id"]: r for r in refs}, anns




# testA/testB run the same code on other refs; they are in the slow suite (the training test scores them too)
@pytest.mark.parametrize("split", ["val", pytest.param("testA", marks=pytest.mark.slow),
                                   pytest.param("testB", marks=pytest.mark.slow)])
def test_test_script_writes_json_and_prints_accuracy(split, tiny_cfg, tiny_opts, toy_root, tmp_path, capsys):
    from refcoco import test as refcoco_test

    torch.manual_seed(0)
    module = TASK.build_module(tiny_cfg(*FAST))
    ckpt = str(tmp_path / "tiny.model")
    torch.save({"state_dict": module.state_dict()}, ckpt)
    result_dir = str(tmp_path / "results")
    path, accuracy = refcoco_test.main(["--cfg", TOY_CFG, "--ckpt", ckpt, "--split", split, "--bs", "4",
                                        "--result-path", result_dir, "--result-name", "tiny", *tiny_opts, *FAST])
    assert path == os.path.join(result_dir, f"tiny_refcoco+_{split}.json")
    with open(path) as f:
        records = json.load(f)
    ref_ids, refs, anns = expected_records(toy_root, split)
    assert [r["ref_id"] for r in records] == ref_ids
    hits = 0
    for record in records:
        x, y, w, h = anns[refs[record["ref_id"]]["ann_id"]]
        hits += iou_plus_one(record["box"], [x, y, x + w, y + h]) >= 0.5
    assert accuracy == pytest.approx(hits / len(records))
    printed = re.search(r"accuracy: ([0-9.]+)%", capsys.readouterr().out)
    assert printed and float(printed.group(1)) == pytest.approx(100 * accuracy, abs=0.006)


@pytest.mark.slow  # 25-50 s: four Python processes on a 2-core machine
def test_two_processes_write_the_same_file_as_one(tiny_cfg, tiny_opts, tmp_path):
    """refcoco/test.py under dist_run_single.sh 2 (each rank a shard, gathered on rank 0) = under nondist_run.sh."""
    torch.manual_seed(0)
    ckpt = str(tmp_path / "tiny.model")
    torch.save({"state_dict": TASK.build_module(tiny_cfg(*FAST)).state_dict()}, ckpt)
    one, two, output = one_and_two_processes(
        tmp_path, "refcoco/test.py", TOY_CFG, ["--ckpt", ckpt, "--split", "test", "--bs", "4", "--result-name", "tiny"],
        [*tiny_opts, *FAST])
    assert "in 2 process(es)" in output and "RefCOCO+ test accuracy:" in output
    assert list(one) == ["tiny_refcoco+_test.json", "tiny_refcoco+_test_details.jsonl"] and one == two
    assert len(json.loads(one["tiny_refcoco+_test.json"])) > 8  # more than two batches: both ranks took a share
