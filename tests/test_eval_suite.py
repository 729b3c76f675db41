"""scripts/eval_suite.py: each entry runs through its task's own test script (the files equal a direct run's, byte
for byte), results.json holds the metrics and results.md puts the paper's numbers (cfgs/paper_results.yaml) beside
them. The slow test runs the whole toy suite (vqa, vcr Q->A + QA->R, refcoco, retrieval) from a clean copy of the
repository, with checkpoints trained there for one epoch."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from tests.test_cfgs_readme import eval_suite_module
from vqa import test as vqa_test

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE = eval_suite_module()
VQA_CFG = os.path.join(ROOT, "cfgs", "vqa", "toy_cpu.yaml")
RETRIEVAL_CFG = os.path.join(ROOT, "cfgs", "retrieval", "toy_cpu.yaml")
TINY = ["NETWORK.VLBERT.hidden_size", "32", "NETWORK.VLBERT.visual_size", "32", "NETWORK.IMAGE_FINAL_DIM", "32",
        "NETWORK.VLBERT.num_hidden_layers", "2", "NETWORK.VLBERT.num_attention_heads", "2",
        "NETWORK.VLBERT.intermediate_size", "64"]


def tiny_vqa(root: str, bert: str) -> list[str]:
    coco = os.path.join(root, "coco")
    return ["DATASET.DATASET_PATH", coco, "DATASET.ANSWER_VOCAB_FILE", os.path.join(coco, "vqa", "answers_vqa.txt"),
            "NETWORK.BERT_MODEL_NAME", bert, *TINY]


def tiny_retrieval(root: str, bert: str) -> list[str]:
    return ["DATASET.DATASET_PATH", os.path.join(root, "flickr30k"), "NETWORK.BERT_MODEL_NAME", bert, *TINY,
            "NETWORK.ITC_DIM", "16"]


def save_random(task, cfg_path: str, overrides: list[str], path: str) -> str:
    """A random tiny module of `task` saved in the original checkpoint layout."""
    from common.config import load_config

    torch.manual_seed(0)
    module = task.build_module(load_config(cfg_path, overrides, add_task_defaults=task.add_defaults))
    torch.save({"state_dict": {"module." + k: v for k, v in module.state_dict().items()}}, path)
    return path


@pytest.fixture(scope="module")
def suite_inputs(small_world_root, vocab_only_bert_dir, tmp_path_factory):
    from retrieval.task import RETRIEVAL
    from vqa.task import VQA

    folder = tmp_path_factory.mktemp("suite")
    vqa_opts, retrieval_opts = tiny_vqa(small_world_root, vocab_only_bert_dir), tiny_retrieval(
        small_world_root, vocab_only_bert_dir)
    entries = [
        {"task": "vqa", "config": VQA_CFG, "checkpoint": save_random(VQA, VQA_CFG, vqa_opts, str(folder / "v.model")),
         "split": "val2014", "overrides": vqa_opts},
        {"task": "vqa", "name": "vqa-evalai", "config": VQA_CFG, "checkpoint": str(folder / "v.model"),
         "split": "test2015", "args": ["--bs", "9"], "overrides": vqa_opts},
        {"task": "retrieval", "config": RETRIEVAL_CFG, "split": "test", "args": ["--k", "4"],
         "checkpoint": save_random(RETRIEVAL, RETRIEVAL_CFG, retrieval_opts, str(folder / "r.model")),
         "overrides": retrieval_opts},
    ]
    suite = folder / "suite.yaml"
    suite.write_text(yaml.safe_dump({"out": str(folder / "out"), "entries": entries}))
    return suite, entries, folder


def test_suite_runs_each_task_through_its_test_script(suite_inputs):
    suite, entries, folder = suite_inputs
    assert SUITE.main([str(suite)]) == 0
    out = folder / "out"
    document = json.loads((out / "results.json").read_text())
    records = {r["name"]: r for r in document["entries"]}
    assert list(records) == ["vqa-val2014", "vqa-evalai", "retrieval-test"]
    # the EvalAI file is the one vqa/test.py writes when run directly with the same arguments
    direct = vqa_test.main(["--cfg", VQA_CFG, "--ckpt", entries[1]["checkpoint"], "--split", "test2015",
                            "--result-path", str(folder / "direct"), "--result-name", "vqa-evalai", "--bs", "9",
                            *entries[1]["overrides"]])
    assert (out / "vqa-evalai" / "vqa-evalai_vqa2_test2015.json").read_bytes() == open(direct, "rb").read()
    assert records["vqa-evalai"]["metrics"] == {}
    # val accuracy: the official evaluation of the written file
    from vqa.vqa_eval import evaluate, load_results

    with open(os.path.join(entries[0]["overrides"][1], "vqa", "v2_mscoco_val2014_annotations.json")) as f:
        annotations = json.load(f)["annotations"]
    report = evaluate(load_results(str(out / "vqa-val2014" / "vqa-val2014_vqa2_val2014.json")), annotations)
    assert records["vqa-val2014"]["metrics"]["accuracy"] == report["overall"]
    retrieval = records["retrieval-test"]["metrics"]
    written = json.loads((out / "retrieval-test" / "retrieval-test_retrieval_test.json").read_text())
    assert retrieval == written["metrics"] and written["k"] == 4 and set(retrieval) >= {"txt_r1", "img_r1", "r_mean"}
    markdown = (out / "results.md").read_text()
    assert (f"| vqa-val2014 | vqa | val2014 | accuracy | {report['overall']:.2f} | 71.16 (test-dev) | "
            f"71.79 (test-dev) |  |") in markdown
    assert "| vqa-evalai | vqa | test2015 | – | – | – | – | no labels: see the files |" in markdown
    assert f"| retrieval-test | retrieval | test | r_mean | {retrieval['r_mean']:.2f} | – | – |  |" in markdown
    assert "- `vqa-evalai/vqa-evalai_vqa2_test2015.json`" in markdown


def test_paper_cells_prefer_the_same_split():
    paper = SUITE.load_paper_results()
    assert SUITE.paper_cells(paper, "vcr", None, "val", "Q->AR") == {"base": "55.2", "large": "58.9"}
    assert SUITE.paper_cells(paper, "vcr", None, "test", "Q->A") == {"base": "73.8 (val)", "large": "75.8"}
    assert SUITE.paper_cells(paper, "refcoco", "gt", "testB", "accuracy") == {"base": "75.01", "large": "75.45"}
    assert SUITE.paper_cells(paper, "refcoco", "proposal", "val", "accuracy") == {"base": "71.60", "large": "72.59"}
    assert SUITE.paper_cells(paper, "vqa", None, "test-dev2015", "accuracy") == {"base": "71.16", "large": "71.79"}
    assert SUITE.paper_cells(paper, "retrieval", None, "test", "r_mean") == {"base": "–", "large": "–"}


def test_bad_suites_name_the_file_and_the_entry(tmp_path, suite_inputs):
    _, entries, _ = suite_inputs
    suite = tmp_path / "bad.yaml"
    suite.write_text(yaml.safe_dump({"entries": [dict(entries[0], checkpoint=str(tmp_path / "none.model"))]}))
    with pytest.raises(SUITE.SuiteError, match=r"bad.yaml: entries\[0\]: checkpoint .*none.model' is not a file"):
        SUITE.load_suite(str(suite))
    suite.write_text(yaml.safe_dump({"entries": [dict(entries[0], task="nlvr2")]}))
    with pytest.raises(SUITE.SuiteError, match=r"entries\[0\]: `task` must be one of"):
        SUITE.load_suite(str(suite))
    suite.write_text(yaml.safe_dump({"entries": [dict(entries[0], task="vcr")]}))
    with pytest.raises(SUITE.SuiteError, match=r"vcr needs `config: \{a: <Q->A>, r: <QA->R>\}`"):
        SUITE.load_suite(str(suite))


def test_a_failing_entry_is_reported_and_the_others_still_run(tmp_path, suite_inputs):
    _, entries, _ = suite_inputs
    broken = dict(entries[2], name="broken", overrides=entries[2]["overrides"] + ["DATASET.NO_SUCH_KEY", "1"])
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"entries": [broken, entries[2]]}))
    assert SUITE.main([str(suite), "--out", str(tmp_path / "out")]) == 1
    records = json.loads((tmp_path / "out" / "results.json").read_text())["entries"]
    assert "NO_SUCH_KEY" in records[0]["error"] and "error" not in records[1] and records[1]["metrics"]



# ---- the whole toy suite from a clean copy of the repository -------------------------------------------------------
def clean_copy(target: str) -> str:
    """The files a clone of this tree would hold (tracked, or new and not ignored), copied to `target`."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        if os.path.isfile(os.path.join(ROOT, rel)):
            os.makedirs(os.path.dirname(os.path.join(target, rel)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, rel), os.path.join(target, rel))
    return target


def run_in(clone: str, *argv: str) -> None:
    env = dict(os.environ, PYTHONPATH=clone, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, *argv], cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


E2E_TINY = ["NETWORK.IMAGE_PRETRAINED", "", "SCALES", "[48, 80]", "NUM_WORKERS_PER_GPU", "0"]
TOY_RUNS = {  # entry name -> (train script, config, extra overrides of the tiny model)
    "vqa": ("vqa/train_end2end.py", "cfgs/vqa/toy_cpu.yaml", []),
    "q2a": ("vcr/train_end2end.py", "cfgs/vcr/toy_q2a_cpu.yaml", E2E_TINY),
    "qa2r": ("vcr/train_end2end.py", "cfgs/vcr/toy_qa2r_cpu.yaml", E2E_TINY),
    "refcoco": ("refcoco/train_end2end.py", "cfgs/refcoco/toy_cpu.yaml", E2E_TINY),
    "retrieval": ("retrieval/train_end2end.py", "cfgs/retrieval/toy_cpu.yaml", ["NETWORK.ITC_DIM", "16"]),
}


@pytest.mark.slow  # ~3-6 CPU minutes: five tiny trainings and the suite, each a fresh Python process
def test_toy_suite_from_a_clean_clone(tmp_path, minilm_dir):
    """`make toy`-style data, one-epoch tiny checkpoints of every task and `scripts/eval_suite.py` run in a copy of
    the repository that holds only what a clone holds: the table and the leaderboard files appear."""
    clone = clean_copy(str(tmp_path / "clone"))
    run_in(clone, "data/make_toy_data.py", "--root", "data/toy", "--size", "small")
    bert = os.path.join(clone, "model", "pretrained_model", "vocab_only")
    os.makedirs(bert)
    shutil.copy(os.path.join(minilm_dir, "vocab.txt"), bert)
    checkpoints = {}
    for name, (script, cfg, extra) in TOY_RUNS.items():
        run_in(clone, script, "--cfg", cfg, "OUTPUT_PATH", f"output/{name}", "TRAIN.END_EPOCH", "1",
               "NETWORK.BERT_MODEL_NAME", bert, *TINY, *extra)
        found = [os.path.join(d, f) for d, _, files in os.walk(os.path.join(clone, "output", name)) for f in files
                 if f.endswith("-0000.model")]
        assert len(found) == 1, found
        checkpoints[name] = found[0]
    opts = {name: ["NETWORK.BERT_MODEL_NAME", bert, *TINY, *TOY_RUNS[name][2]] for name in TOY_RUNS}
    vcr = {"config": {"a": TOY_RUNS["q2a"][1], "r": TOY_RUNS["qa2r"][1]},
           "checkpoint": {"a": checkpoints["q2a"], "r": checkpoints["qa2r"]}, "overrides": opts["q2a"]}
    entries = [
        {"task": "vqa", "config": TOY_RUNS["vqa"][1], "checkpoint": checkpoints["vqa"], "split": "val2014",
         "overrides": opts["vqa"]},
        {"task": "vqa", "config": TOY_RUNS["vqa"][1], "checkpoint": checkpoints["vqa"], "split": "test2015",
         "overrides": opts["vqa"]},
        {"task": "vcr", "split": "val", **vcr},
        {"task": "vcr", "split": "test", **vcr},
        {"task": "refcoco", "config": TOY_RUNS["refcoco"][1], "checkpoint": checkpoints["refcoco"], "split": "val",
         "overrides": opts["refcoco"]},
        {"task": "retrieval", "config": TOY_RUNS["retrieval"][1], "checkpoint": checkpoints["retrieval"],
         "split": "test", "args": ["--k", "8"], "overrides": opts["retrieval"]},
    ]
    (tmp_path / "clone" / "suite.yaml").write_text(yaml.safe_dump({"entries": entries}))
    run_in(clone, "scripts/eval_suite.py", "suite.yaml", "--out", "eval_output")
    out = os.path.join(clone, "eval_output")
    records = {r["name"]: r for r in json.load(open(os.path.join(out, "results.json")))["entries"]}
    assert all("error" not in r for r in records.values()), records
    assert set(records["vcr-val"]["metrics"]) == {"Q->A", "QA->R", "Q->AR"}
    assert set(records["refcoco-val"]["metrics"]) == {"accuracy"} and records["refcoco-val"]["variant"] == "proposal"
    for leaderboard in ("vqa-test2015/vqa-test2015_vqa2_test2015.json",
                        "vcr-test/vcr-test_test_result_Q2AR.csv", "refcoco-val/refcoco-val_refcoco+_val.json",
                        "retrieval-test/retrieval-test_retrieval_test.json"):
        assert os.path.isfile(os.path.join(out, leaderboard)), leaderboard
    markdown = open(os.path.join(out, "results.md")).read()
    q2ar = records["vcr-val"]["metrics"]["Q->AR"]
    assert f"| vcr-val | vcr | val | Q->AR | {q2ar:.2f} | 55.2 | 58.9 |  |" in markdown
    assert "| vcr-test | vcr | test | Q->A | – | 73.8 (val) | 75.8 | no labels: see the files |" in markdown
    refcoco = records["refcoco-val"]["metrics"]["accuracy"]
    assert f"| refcoco-val | refcoco | val | accuracy | {refcoco:.2f} | 71.60 | 72.59 |  |" in markdown
