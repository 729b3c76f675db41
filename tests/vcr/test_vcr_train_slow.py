"""Fine-tuning on the demo toy world's VCR split through the shared engine, then `vcr/val.py` over the two models.

Q->A and QA->R must clearly beat chance (25%), and Q->AR (both right) chance (6.25%). The world mixes two kinds of
question (data/shape_world/vcr.py): "which of them is the biggest" items, answerable from each choice's own region,
learnt within the first epochs; and colour/place items, which need a colour or side word matched against a region:
near chance for 3 epochs, then learnt (Q->A). The per-kind figures are printed. The ResNet starts from the toy
backbone (data/toy_backbone.py), as the toy configs do.

Slow (CPU minutes per task): `pytest -m slow tests/vcr/test_vcr_train_slow.py`.
"""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest

from common.engine.entry import train_main
from vcr import val as vcr_val
from vcr.task import TASK

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EPOCHS = int(os.environ.get("VCR_TOY_EPOCHS", "8"))  # as the toy configs


def _only(pattern: str) -> str:
    found = glob.glob(pattern, recursive=True)
    assert len(found) == 1, f"expected one file for {pattern}, found {found}"
    return found[0]


@pytest.fixture(scope="module")
def trained(demo_world_root, minilm_dir, toy_backbone_weights, tmp_path_factory) -> dict:
    """{'a': ..., 'r': ...}: best val accuracy, the run's config.yaml and its best checkpoint, per task."""
    out = {}
    for which, yaml_name in (("a", "toy_q2a_cpu.yaml"), ("r", "toy_qa2r_cpu.yaml")):
        model_dir = tmp_path_factory.mktemp(f"vcr_{which}")
        state = train_main(TASK, ["--cfg", os.path.join(REPO, "cfgs", "vcr", yaml_name), "--model-dir", str(model_dir),
                                  "DATASET.DATASET_PATH", os.path.join(demo_world_root, "vcr"),
                                  "NETWORK.BERT_MODEL_NAME", minilm_dir,
                                  "NETWORK.IMAGE_PRETRAINED", toy_backbone_weights, "TRAIN.END_EPOCH", str(EPOCHS)])
        out[which] = {"best_val": state.best_val, "best_epoch": state.best_epoch,
                      "cfg": _only(os.path.join(str(model_dir), "**", "config.yaml")),
                      "ckpt": _only(os.path.join(str(model_dir), "**", "*-best.model"))}
    return out


@pytest.mark.slow
@pytest.mark.parametrize("which", ["a", "r"])
def test_toy_vcr_beats_chance(trained, which):
    run = trained[which]
    print(f"{'Q->A' if which == 'a' else 'QA->R'}: best val Acc {run['best_val']:.3f} at epoch {run['best_epoch']}")
    # about 220 val questions: 4-way chance is 25% (one standard error ~3 points)
    assert run["best_val"] > 0.35


@pytest.mark.slow
def test_val_script_reports_q2ar_of_the_two_models(trained, demo_world_root, tmp_path, capsys):
    results = tmp_path / "results"
    scores = vcr_val.main(["--a-cfg", trained["a"]["cfg"], "--r-cfg", trained["r"]["cfg"],
                           "--a-ckpt", trained["a"]["ckpt"], "--r-ckpt", trained["r"]["ckpt"],
                           "--result-path", str(results), "--result-name", "toy"])
    printed = capsys.readouterr().out
    with open(os.path.join(demo_world_root, "vcr", "val.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    a_logits, r_logits = np.load(results / "toy_a_pred.npy"), np.load(results / "toy_r_pred.npy")
    assert a_logits.shape == r_logits.shape == (len(rows), 4)
    a_right = a_logits.argmax(1) == np.array([r["answer_label"] for r in rows])
    r_right = r_logits.argmax(1) == np.array([r["rationale_label"] for r in rows])
    expected = {"Q->A": a_right.mean(), "QA->R": r_right.mean(), "Q->AR": (a_right & r_right).mean()}
    assert scores == pytest.approx(expected)
    assert f"Q->AR: {expected['Q->AR'] * 100:.2f}%" in printed
    # the validation pass of training and the script score the same best checkpoints
    assert scores["Q->A"] == pytest.approx(trained["a"]["best_val"], abs=1e-6)
    assert scores["QA->R"] == pytest.approx(trained["r"]["best_val"], abs=1e-6)
    biggest = np.array(["biggest" in r["question"] for r in rows])
    for name, mask in (("biggest", biggest), ("colour/place", ~biggest)):
        print(f"{name} ({mask.sum()} questions): Q->A {a_right[mask].mean():.3f}  QA->R {r_right[mask].mean():.3f}  "
              f"Q->AR {(a_right & r_right)[mask].mean():.3f}")
    assert scores["Q->AR"] > 0.0625 + 0.10
    assert (a_right & r_right)[biggest].mean() > 0.6
    assert a_right[~biggest].mean() > 0.5  # the colour or side word matched against the region
