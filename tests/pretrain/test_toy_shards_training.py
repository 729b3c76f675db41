"""Toy pre-training streamed from shards through the launch scripts, as PREPARE_DATA.md shows it: toy world ->
data/make_shards.py -> `nondist_run.sh pretrain/train_end2end.py cfgs/pretrain/toy_shards_cpu.yaml` (tiny model, a
few steps); training goes past a corrupt sample and stops with a clear error when bad samples pass the limit; the
same under `dist_run_single.sh 2` ends with every rank at the same step."""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.pretrain.test_streaming import corrupt_member

ROOT = Path(__file__).resolve().parents[2]
CFG = "cfgs/pretrain/toy_shards_cpu.yaml"


def tiny(shards: str, bert_dir: str, out: str) -> list[str]:
    return ["OUTPUT_PATH", out, "DATASET.0.DATASET_PATH", shards, "DATASET.1.DATASET_PATH", shards,
            "NETWORK.BERT_MODEL_NAME", bert_dir, "NETWORK.VLBERT.hidden_size", "32", "NETWORK.VLBERT.visual_size", "32",
            "NETWORK.IMAGE_FINAL_DIM", "32", "NETWORK.VLBERT.num_hidden_layers", "2",
            "NETWORK.VLBERT.num_attention_heads", "2", "NETWORK.VLBERT.intermediate_size", "64",
            "TRAIN.BATCH_IMAGES", "[4, 4]", "VAL.BATCH_IMAGES", "[4, 4]", "DATASET.0.SAMPLES_PER_EPOCH", "16",
            "TRAIN.END_EPOCH", "1", "TRAIN.WARMUP_STEPS", "2", "LOG_FREQUENT", "1"]


def run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def broken_shards(toy_shards, tmp_path_factory) -> str:
    """The toy shards with the features of sample 000000010 corrupt."""
    shards = str(tmp_path_factory.mktemp("broken") / "shards")
    shutil.copytree(toy_shards, shards)
    corrupt_member(os.path.join(shards, "train-000001.tar"), "000000010.features.npy")
    return shards


def test_toy_pretraining_on_shards_goes_past_a_bad_sample(broken_shards, vocab_only_bert_dir, tmp_path):
    overrides = tiny(broken_shards, vocab_only_bert_dir, str(tmp_path)) + [
        "DATASET.0.RESAMPLE_SHARDS", "false", "DATASET.0.SAMPLES_PER_EPOCH", "40",
        "DATASET.0.MAX_BAD_SAMPLE_FRACTION", "0.05"]  # 1 bad of 41 read
    proc = run(["./scripts/nondist_run.sh", "pretrain/train_end2end.py", CFG, str(tmp_path), *overrides])
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "bad sample skipped (1 of" in log and "train-000001.tar key '000000010'" in log
    saved = glob.glob(str(tmp_path / "toy_shards_cpu" / "train_train" / "*-0000.model"))
    assert saved, log[-2000:]
    checkpoint = torch.load(saved[0], map_location="cpu", weights_only=False)
    assert checkpoint["config"]["DATASET"][0]["FORMAT"] == "wds"
    assert "Epoch[0] Validation" in log
    assert "samples read on rank 0 are bad" not in log
    # the epoch-end summary of each streaming training dataset (the trainer's bad-sample log)
    read = re.search(r"Epoch\[0\] DATASET \(conceptual_captions\)\.TRAIN_SHARDS: 1 of (\d+) samples read so far "
                     r"were bad and skipped", log)
    assert read and int(read.group(1)) >= 41, log[-3000:]  # 40 used + the bad one, and what the buffer holds
    assert re.search(r"Epoch\[0\] DATASET \(general_corpus\)\.TRAIN_SHARDS: 0 of \d+ samples read", log)


@pytest.mark.slow
def test_toy_pretraining_on_shards_stops_when_bad_samples_pass_the_limit(broken_shards, vocab_only_bert_dir,
                                                                        tmp_path):
    overrides = tiny(broken_shards, vocab_only_bert_dir, str(tmp_path)) + [
        "DATASET.0.RESAMPLE_SHARDS", "false", "DATASET.0.SAMPLES_PER_EPOCH", "40",
        "DATASET.0.MAX_BAD_SAMPLE_FRACTION", "0.0"]
    proc = run(["./scripts/nondist_run.sh", "pretrain/train_end2end.py", CFG, str(tmp_path), *overrides])
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "BadDataError" in log and "DATASET.MAX_BAD_SAMPLE_FRACTION=0.0" in log and "key '000000010'" in log
    assert not glob.glob(str(tmp_path / "**" / "*.model"), recursive=True)


@pytest.mark.slow
def test_two_process_toy_pretraining_on_shards(toy_shards, vocab_only_bert_dir, tmp_path):
    overrides = tiny(toy_shards, vocab_only_bert_dir, str(tmp_path)) + ["NUM_WORKERS_PER_GPU", "1",
                                                                        "DATASET.0.SAMPLES_PER_EPOCH", "40"]
    proc = run(["./scripts/dist_run_single.sh", "2", "pretrain/train_end2end.py", CFG, str(tmp_path), *overrides],
               timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    saved = glob.glob(str(tmp_path / "toy_shards_cpu" / "train_train" / "*-0000.model"))
    assert saved, log[-2000:]
    state = torch.load(saved[0], map_location="cpu", weights_only=False)
    assert state["train_state"]["global_step"] == 5  # ceil(40 / (2 ranks x 4)) batches on each rank


def test_prepare_data_commands_make_the_shards_the_toy_config_names(small_world_root, tmp_path):
    """The make_shards commands of PREPARE_DATA.md ("The toy world as shards") write exactly the shards that
    cfgs/pretrain/toy_shards_cpu.yaml lists, for the small toy world."""
    import shlex

    from common.config import dataset_sections, load_config
    from common.data.shards import expand_shards
    from data.make_shards import main
    from pretrain.config import add_pretrain_defaults

    text = (ROOT / "PREPARE_DATA.md").read_text()
    block = text[text.index("### The toy world as shards"):]
    commands = [line for line in block.split("```")[1].splitlines() if line.startswith("python data/make_shards.py")]
    assert len(commands) == 4
    toy = str(tmp_path / "toy")
    shutil.copytree(small_world_root, toy)
    for command in commands:
        args = shlex.split(command.replace("data/toy", toy))[2:]
        assert main(args) == 0
    cfg = load_config(str(ROOT / CFG), ["DATASET.0.DATASET_PATH", f"{toy}/shards", "DATASET.1.DATASET_PATH",
                                        f"{toy}/shards"], add_task_defaults=add_pretrain_defaults)
    named = set()
    for section in dataset_sections(cfg):
        for split in ("TRAIN", "VAL", "TEST"):
            shards = expand_shards(section[f"{split}_SHARDS"], section.DATASET_PATH)
            assert all(os.path.isfile(s) for s in shards), shards
            named |= {os.path.basename(s) for s in shards}
    assert named == {n for n in os.listdir(f"{toy}/shards") if n.endswith(".tar")}
