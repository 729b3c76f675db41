"""vcr/val.py and vcr/test.py end to end on hand-written files with tiny random models (one in original key layout)."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
from vcr_fixtures import tiny_cfg, to_original_keys, vcr_line, write_vcr_dir

from common.config import dump_config
from tests.script_runs import one_and_two_processes
from vcr import test as vcr_test
from vcr import val as vcr_val
from vcr.module import ResNetVLBERTForVCR
from vcr.predictions import LEADERBOARD_COLUMNS

QUESTIONS = [["What", "is", [0], "holding", "?"], ["Why", "is", [1, 2], "here", "?"], ["Is", [3], "wet", "?"]]
ANSWERS = [[["A", "cup"], [[2], "runs"], ["Nothing"], ["Yes", "it", "is"]],
           [["No"], ["Maybe", [0]], [[1], "waits"], ["Rain"]],
           [["Yes"], ["No", "it", "is", "not"], ["It", "rained"], [[3], "is", "dry"]]]
RATIONALES = [[["Because", [0], "is", "hungry"], ["It", "is", "late"], ["Sun"], ["Dogs", "bark"]]] * 3


@pytest.fixture
def setup(tmp_path, vocab_only_dir):
    """Data (3 val + 2 test questions), the two configs and the two checkpoints (Q->A saved in original keys)."""
    lines = {
        "val": [vcr_line(n, "val", QUESTIONS[n], ANSWERS[n], RATIONALES[n], n % 4, (n + 2) % 4) for n in range(3)],
        "test": [vcr_line(n, "test", QUESTIONS[n], ANSWERS[n], RATIONALES[n]) for n in range(2)],
    }
    data = write_vcr_dir(str(tmp_path / "vcr"), lines)
    paths = {}
    for which, task, seed in (("a", "Q2A", 0), ("r", "QA2R", 1)):
        cfg = tiny_cfg(vocab_only_dir, data, "DATASET.TASK", task, "VAL.BATCH_IMAGES", "2", "TEST.BATCH_IMAGES", "3")
        paths[f"{which}_cfg"] = str(tmp_path / f"{which}.yaml")
        dump_config(cfg, paths[f"{which}_cfg"])
        torch.manual_seed(seed)
        state = ResNetVLBERTForVCR(cfg, cls_id=101, sep_id=102).state_dict()
        if which == "a":
            state = to_original_keys(state)
        paths[f"{which}_ckpt"] = str(tmp_path / f"{which}.model")
        torch.save({"state_dict": state}, paths[f"{which}_ckpt"])
    args = ["--a-cfg", paths["a_cfg"], "--r-cfg", paths["r_cfg"], "--a-ckpt", paths["a_ckpt"],
            "--r-ckpt", paths["r_ckpt"], "--result-path", str(tmp_path / "results"), "--result-name", "toy"]
    return data, args, tmp_path / "results"


def test_val_reports_q2ar_consistent_with_cached_logits(setup, capsys):
    data, args, results = setup
    scores = vcr_val.main(args)
    printed = capsys.readouterr().out
    a_logits, r_logits = np.load(results / "toy_a_pred.npy"), np.load(results / "toy_r_pred.npy")
    assert a_logits.shape == (3, 4) and r_logits.shape == (3, 4)
    with open(os.path.join(data, "val.jsonl")) as f:
        labels = [json.loads(line) for line in f]
    a_right = [int(np.argmax(a_logits[n])) == labels[n]["answer_label"] for n in range(3)]
    r_right = [int(np.argmax(r_logits[n])) == labels[n]["rationale_label"] for n in range(3)]
    expected = {"Q->A": sum(a_right) / 3, "QA->R": sum(r_right) / 3,
                "Q->AR": sum(a and r for a, r in zip(a_right, r_right, strict=True)) / 3}
    assert scores == pytest.approx(expected)
    assert f"Q->AR: {expected['Q->AR'] * 100:.2f}%" in printed
    # the cache is used when asked: a changed cache changes the report
    np.save(results / "toy_a_pred.npy", -a_logits)
    assert vcr_val.main(args + ["--use-cache"])["Q->A"] == pytest.approx(
        np.mean([int(np.argmax(-a_logits[n])) == labels[n]["answer_label"] for n in range(3)]))


def test_val_logits_match_a_direct_forward(setup, vocab_only_dir):
    data, args, results = setup
    vcr_val.main(args)
    from common.engine.evaluate import load_trained_weights
    from vcr.task import TASK, build_vcr_dataset

    cfg = tiny_cfg(vocab_only_dir, data, "DATASET.TASK", "QA2R")
    module = ResNetVLBERTForVCR(cfg, cls_id=101, sep_id=102)
    load_trained_weights(TASK, module, args[args.index("--r-ckpt") + 1])
    item = build_vcr_dataset(cfg, "val")[2]
    batch = {k: (v.unsqueeze(0) if torch.is_tensor(v) else v) for k, v in item.items()}
    with torch.no_grad():
        direct = module.eval()(batch)["label_logits"][0].numpy()
    np.testing.assert_allclose(np.load(results / "toy_r_pred.npy")[2], direct, rtol=1e-4, atol=1e-5)


def test_leaderboard_csv_has_one_row_per_test_question(setup):
    data, args, results = setup
    merged = vcr_test.main(args)
    assert merged == str(results / "toy_test_result_Q2AR.csv")
    with open(merged, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == LEADERBOARD_COLUMNS
    assert [r[0] for r in rows[1:]] == ["test-0", "test-1"]
    a_logits = np.load(results / "toy_test_a_pred.npy")
    r_logits = np.load(results / "toy_test_r_pred.npy")
    assert r_logits.shape == (8, 4)  # 2 questions x 4 conditioning answers
    for n, row in enumerate(rows[1:]):
        values = np.array([float(v) for v in row[1:]]).reshape(5, 4)
        np.testing.assert_allclose(values.sum(1), 1.0, atol=1e-9)
        softmax = np.exp(a_logits[n] - a_logits[n].max())
        np.testing.assert_allclose(values[0], softmax / softmax.sum(), rtol=1e-6)
        # group i = rationale scores conditioned on answer i = dataset row 4n + i
        assert np.argmax(values[3]) == np.argmax(r_logits[4 * n + 2])


@pytest.mark.slow  # 25-50 s: four Python processes on a 2-core machine
@pytest.mark.parametrize("script", ["vcr/test.py", "vcr/val.py"])
def test_two_processes_write_the_same_files_as_one(setup, script, tmp_path):
    """Under dist_run_single.sh 2 (which passes --cfg: one config for both models, DATASET.TASK set per model) the
    scripts write the files of nondist_run.sh, to the last digit of every probability; --a-bs 1 gives rank 1 a
    share of the 2 Q->A test rows too."""
    _, args, _ = setup
    a_cfg = args[args.index("--a-cfg") + 1]
    own = ["--a-ckpt", args[args.index("--a-ckpt") + 1], "--r-ckpt", args[args.index("--r-ckpt") + 1],
           "--result-name", "toy", "--a-bs", "1"]
    one, two, output = one_and_two_processes(tmp_path, script, a_cfg, own, [])
    assert "in 2 process(es)" in output
    stem = "toy_test" if script == "vcr/test.py" else "toy"
    expected = {f"{stem}_{w}_pred{ext}" for w in "ar" for ext in (".npy", "_ids.txt", "_meta.json")}
    if script == "vcr/test.py":
        expected |= {f"toy_test_result_{t}.csv" for t in ("Q2A", "QA2R", "Q2AR")}
    assert set(one) == expected and one == two


# ---- --use-cache reuses only a cache made by the same inputs (vcr/logit_cache.py) -------------------------------
def other_checkpoint(args: list[str], which: str, seed: int, tmp_path) -> list[str]:
    """`args` with --{which}-ckpt replaced by a checkpoint of the same model with other random weights."""
    cfg_path = args[args.index(f"--{which}-cfg") + 1]
    from common.config import load_config
    from vcr.task import TASK

    torch.manual_seed(seed)
    module = ResNetVLBERTForVCR(load_config(cfg_path, add_task_defaults=TASK.add_defaults), cls_id=101, sep_id=102)
    path = str(tmp_path / f"other_{which}.model")
    torch.save({"state_dict": module.state_dict()}, path)
    changed = list(args)
    changed[changed.index(f"--{which}-ckpt") + 1] = path
    return changed


def test_use_cache_reruns_a_cache_made_by_another_checkpoint(setup, tmp_path, caplog):
    """The cache of checkpoint R1 is not reused for R2: the scores are R2's (as without --use-cache), and a warning
    names the reason. Before, R1's scores were printed for R2."""
    _, args, results = setup
    vcr_val.main(args)
    first_r = np.load(results / "toy_r_pred.npy")
    other = other_checkpoint(args, "r", 7, tmp_path)
    with caplog.at_level("WARNING"):
        cached_run = vcr_val.main(other + ["--use-cache"])
    fresh_r = np.load(results / "toy_r_pred.npy")
    assert not np.allclose(fresh_r, first_r)  # R2's logits, written over R1's
    assert "toy_r_pred.npy was made by other inputs; running the model again (checkpoint: cache" in caplog.text
    assert "other_r.model" in caplog.text and "toy_a_pred" not in caplog.text  # the Q->A cache still matches
    assert cached_run == vcr_val.main(other)  # the same scores as a run without the cache
    meta = json.loads((results / "toy_r_pred_meta.json").read_text())
    assert meta["checkpoint"]["path"] == other[other.index("--r-ckpt") + 1] and meta["split"] == "val"


def test_use_cache_reruns_for_another_annotation_file_or_config(setup, tmp_path, caplog):
    data, args, results = setup
    vcr_val.main(args)
    stamp = (results / "toy_a_pred_meta.json").stat().st_mtime_ns
    copy = tmp_path / "val_copy.jsonl"
    lines = open(os.path.join(data, "val.jsonl")).read().splitlines()
    copy.write_text("\n".join(lines) + "\n\n")  # the same questions, but another file
    with caplog.at_level("WARNING"):
        vcr_val.main(args + ["--use-cache", "--annot", str(copy)])
    assert "toy_a_pred.npy was made by other inputs" in caplog.text and "annotations: cache" in caplog.text
    assert (results / "toy_a_pred_meta.json").stat().st_mtime_ns != stamp
    caplog.clear()
    with caplog.at_level("WARNING"):
        vcr_val.main(args + ["--use-cache", "--annot", str(copy), "NETWORK.CLASSIFIER_DROPOUT", "0.3"])
    assert "config: cache" in caplog.text


def test_use_cache_reruns_a_cache_without_a_record(setup, caplog):
    """A cache of an earlier version, or one whose write was interrupted (the record is written last)."""
    _, args, results = setup
    vcr_val.main(args)
    np.save(results / "toy_a_pred.npy", np.zeros((3, 4), np.float32))
    os.remove(results / "toy_a_pred_meta.json")
    with caplog.at_level("WARNING"):
        vcr_val.main(args + ["--use-cache"])
    assert "toy_a_pred.npy has no record of what made it" in caplog.text
    assert np.load(results / "toy_a_pred.npy").any() and (results / "toy_a_pred_meta.json").is_file()


def test_a_broken_label_line_is_named(tmp_path):
    from vcr.predictions import read_vcr_labels

    path = tmp_path / "val.jsonl"
    path.write_text('{"annot_id": "val-0", "answer_label": 1, "rationale_label": 2}\n{"annot_id": \n')
    with pytest.raises(ValueError, match=rf"^{path}:2: not a valid JSON line"):
        read_vcr_labels(str(path))
