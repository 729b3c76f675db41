"""Bitwise resume on the real VL-BERT module: toy VQA with the default configuration (on CPU: the oneDNN linear swap
on), AdamW and dropout on, trained 2 epochs straight vs stopped after epoch 0 and resumed. Every tensor of the final
checkpoint (weights, optimizer moments, schedule, scaler, random generator states) must be equal bit for bit, in one
process and in two (gloo). Each run is a fresh process, as a resumed job is."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from vqa_fixtures import REPO, TOY_CFG, tiny_overrides

from tests.checkpoint_tensors import checkpoint_tensors

RUN_DIR = Path("output", "toy", "vqa", "toy_cpu", "val2014_train")
PREFIX = "vl-bert_toy_prec_vqa"
# the tiny model with dropout back on (tiny_overrides turns it off); AdamW and every other key as the toy config
RESUME_RUN = ["DATASET.TRAIN_IMAGE_SET", "val2014", "TRAIN.END_EPOCH", "2", "TRAIN.WARMUP_STEPS", "2",
              "TRAIN.AUTO_RESUME", "true", "NETWORK.VLBERT.hidden_dropout_prob", "0.1",
              "NETWORK.VLBERT.attention_probs_dropout_prob", "0.1", "NETWORK.CLASSIFIER_DROPOUT", "0.1"]


def train(launcher: list[str], out: Path, overrides: list[str]) -> str:
    # idle OpenMP threads sleep instead of spinning: same threads and maths, far less time on a shared machine
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    result = subprocess.run([*launcher, "vqa/train_end2end.py", TOY_CFG, str(out), *overrides], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output



def check_resume_is_bitwise(launcher: list[str], tmp_path: Path, overrides: list[str]) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(launcher, straight, overrides)
    (resumed / RUN_DIR).mkdir(parents=True)
    # what a run stopped after epoch 0 leaves behind: its epoch-0 checkpoint, from the same deterministic epoch
    shutil.copy(straight / RUN_DIR / f"{PREFIX}-0000.model", resumed / RUN_DIR)
    output = train(launcher, resumed, overrides)
    assert "resumed from" in output
    expected, got = (torch.load(out / RUN_DIR / f"{PREFIX}-0001.model", map_location="cpu", weights_only=True)
                     for out in (straight, resumed))
    assert got["train_state"] == expected["train_state"]
    expected_tensors, got_tensors = checkpoint_tensors(expected), checkpoint_tensors(got)
    assert got_tensors.keys() == expected_tensors.keys()
    assert any(key.startswith("state_dict.vlbert.encoder.") for key in got_tensors)
    assert any(key.startswith("optimizer.state.") for key in got_tensors)
    different = [key for key, value in expected_tensors.items() if not torch.equal(got_tensors[key], value)]
    assert not different, f"{len(different)} of {len(expected_tensors)} tensors differ, e.g. {different[:5]}"


def default_config_swaps_linears(overrides: list[str]) -> bool:
    """Whether this configuration runs with the oneDNN nn.Linear swap (the CPU default where oneDNN is built in)."""
    from common.config import load_config
    from common.model.onednn_linear import OneDnnLinear
    from vqa.config import add_vqa_defaults
    from vqa.module import ResNetVLBERTForVQA

    cfg = load_config(TOY_CFG, overrides, add_task_defaults=add_vqa_defaults)
    module = ResNetVLBERTForVQA.from_config(cfg, load_pretrained=False)
    return any(isinstance(m, OneDnnLinear) for m in module.modules())


def test_one_process_resume_is_bitwise_identical(vqa_toy_root, vqa_vocab_only_dir, tmp_path):
    overrides = tiny_overrides(vqa_vocab_only_dir, vqa_toy_root) + RESUME_RUN
    from common.model.onednn_linear import onednn_linear_available

    assert default_config_swaps_linears(overrides) == onednn_linear_available()
    check_resume_is_bitwise(["./scripts/nondist_run.sh"], tmp_path, overrides)


@pytest.mark.slow
def test_two_process_resume_is_bitwise_identical(vqa_toy_root, vqa_vocab_only_dir, tmp_path):
    overrides = tiny_overrides(vqa_vocab_only_dir, vqa_toy_root) + RESUME_RUN + ["TRAIN.BATCH_IMAGES", "8"]
    check_resume_is_bitwise(["./scripts/dist_run_single.sh", "2"], tmp_path, overrides)
