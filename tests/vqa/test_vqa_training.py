"""VQA training through the real launchers: checkpoints in the original layout, 2-process DDP, and (slow) learning
on the demo-size toy world clearly beyond the text-only baseline."""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import torch
from vqa_fixtures import REPO, TOY_CFG, data_overrides, tiny_overrides

from common.model.state_dict_io import read_checkpoint_file

FAST = ["DATASET.TRAIN_IMAGE_SET", "val2014", "TRAIN.END_EPOCH", "1", "TRAIN.BATCH_IMAGES", "16",
        "VAL.BATCH_IMAGES", "32", "TRAIN.WARMUP_STEPS", "2", "LOG_FREQUENT", "2"]
RUN_DIR = os.path.join("output", "toy", "vqa", "toy_cpu", "val2014_train")


def launch(args: list[str], timeout: int = 600) -> str:
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def test_tiny_run_writes_original_checkpoints(vqa_toy_root, vqa_vocab_only_dir, tmp_path):
    out = str(tmp_path / "run")
    launch(["./scripts/nondist_run.sh", "vqa/train_end2end.py", TOY_CFG, out,
            *tiny_overrides(vqa_vocab_only_dir, vqa_toy_root), *FAST])
    prefix = os.path.join(out, RUN_DIR, "vl-bert_toy_prec_vqa")
    for path in (f"{prefix}-0000.model", f"{prefix}-best.model"):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        assert {"state_dict", "optimizer", "validation_monitor"} <= set(ckpt), path
    state = read_checkpoint_file(f"{prefix}-0000.model")["state_dict"]
    assert state["final_mlp.2.weight"].shape == (20, 32) and "final_mlp.0.LayerNorm.weight" in state
    assert any(k.startswith("vlbert.encoder.layer.1.") for k in state)
    # the checkpoint feeds vqa/test.py
    from vqa import test as test_script

    path = test_script.main(["--cfg", TOY_CFG, "--ckpt", f"{prefix}-best.model", "--result-path", str(tmp_path),
                             "--result-name", "run", *tiny_overrides(vqa_vocab_only_dir, vqa_toy_root)])
    assert len(json.load(open(path))) == 100


@pytest.mark.slow
def test_two_process_training(vqa_toy_root, vqa_vocab_only_dir, tmp_path):
    out = str(tmp_path / "ddp")
    output = launch(["./scripts/dist_run_single.sh", "2", "vqa/train_end2end.py", TOY_CFG, out,
                     *tiny_overrides(vqa_vocab_only_dir, vqa_toy_root), *FAST, "TRAIN.BATCH_IMAGES", "8"])
    assert "world size 2" in output
    assert re.search(r"Val-SoftAcc=\d", output)
    assert os.path.isfile(os.path.join(out, RUN_DIR, "vl-bert_toy_prec_vqa-0000.model"))


@pytest.mark.slow
def test_toy_training_beats_the_text_only_baseline(demo_world_root, minilm_dir, tmp_path):
    """The toy config as `make demo` runs it: val SoftAcc must clear the best text-only baseline by 10 points."""
    out = str(tmp_path / "demo")
    output = launch(["./scripts/nondist_run.sh", "vqa/train_end2end.py", TOY_CFG, out,
                     *data_overrides(demo_world_root), "NETWORK.BERT_MODEL_NAME", minilm_dir], timeout=1800)
    accuracies = [float(v) for v in re.findall(r"Val-SoftAcc=([0-9.]+)", output)]
    with open(os.path.join(demo_world_root, "baselines.json")) as f:
        val = json.load(f)["vqa"]["val2014"]
    text_only = max(val["text_only_per_question"], val["text_only_per_template"])
    assert accuracies and max(accuracies) > text_only + 0.10, (accuracies, text_only)
