"""Mid-epoch resume on the real VL-BERT module: toy VQA with the default configuration (oneDNN linear swap on CPU,
persistent loader workers, random flips), AdamW and dropout on, a step checkpoint every update. A run stopped
part-way into epoch 1 (its folder: the epoch-0 file and a step file of epoch 1) and resumed must end with a final
checkpoint equal bit for bit to the uninterrupted run's, in one process and in two (gloo). And a folder that holds
another experiment's checkpoints is refused, by file and key, before anything in it is rewritten."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from test_vqa_resume import PREFIX, RESUME_RUN, RUN_DIR, train
from vqa_fixtures import tiny_overrides

from common.engine.dist import DistEnv
from common.engine.resume_check import ResumeMismatchError
from common.engine.trainer import fit
from tests.checkpoint_tensors import checkpoint_tensors

STEP_RUN = ["NUM_WORKERS_PER_GPU", "1", "TRAIN.CHECKPOINT_EVERY_STEPS", "3", "TRAIN.KEEP_LAST", "0"]  # 7 steps an epoch


def check_mid_epoch_resume_is_bitwise(launcher: list[str], tmp_path: Path, overrides: list[str]) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(launcher, straight, overrides)
    epoch1 = sorted((straight / RUN_DIR / "steps").glob(f"{PREFIX}-e0001-s*.model"))
    assert len(epoch1) >= 2, "epoch 1 must have updates before its last one"
    stop = epoch1[len(epoch1) // 2]  # part-way into epoch 1
    (resumed / RUN_DIR / "steps").mkdir(parents=True)
    shutil.copy(straight / RUN_DIR / f"{PREFIX}-0000.model", resumed / RUN_DIR)
    shutil.copy(stop, resumed / RUN_DIR / "steps")
    output = train(launcher, resumed, overrides)
    resumed_line = next(line for line in output.splitlines() if "resumed from" in line)
    assert f"steps/{stop.name}: epoch 1 after batch" in resumed_line, resumed_line
    expected, got = (torch.load(out / RUN_DIR / f"{PREFIX}-0001.model", map_location="cpu", weights_only=True)
                     for out in (straight, resumed))
    assert got["train_state"] == expected["train_state"]
    expected_tensors, got_tensors = checkpoint_tensors(expected), checkpoint_tensors(got)
    assert got_tensors.keys() == expected_tensors.keys()
    assert any(key.startswith("state_dict.vlbert.encoder.") for key in got_tensors)
    different = [key for key, value in expected_tensors.items() if not torch.equal(got_tensors[key], value)]
    assert not different, f"{len(different)} of {len(expected_tensors)} tensors differ, e.g. {different[:5]}"


def test_one_process_mid_epoch_resume_is_bitwise_identical(vqa_toy_root, vqa_vocab_only_dir, tmp_path):
    overrides = tiny_overrides(vqa_vocab_only_dir, vqa_toy_root) + RESUME_RUN + STEP_RUN
    check_mid_epoch_resume_is_bitwise(["./scripts/nondist_run.sh"], tmp_path, overrides)


@pytest.mark.slow
def test_two_process_mid_epoch_resume_is_bitwise_identical(vqa_toy_root, vqa_vocab_only_dir, tmp_path):
    overrides = tiny_overrides(vqa_vocab_only_dir, vqa_toy_root) + RESUME_RUN + STEP_RUN + ["TRAIN.BATCH_IMAGES", "8"]
    check_mid_epoch_resume_is_bitwise(["./scripts/dist_run_single.sh", "2"], tmp_path, overrides)


def test_auto_resume_into_another_models_folder_is_refused_by_file_and_key(vqa_tiny_cfg, tmp_path):
    from vqa.task import TASK

    out = ["OUTPUT_PATH", str(tmp_path), "DATASET.TRAIN_IMAGE_SET", "val2014", "TRAIN.END_EPOCH", "1"]
    fit(TASK, vqa_tiny_cfg(*out), DistEnv(), "toy_cpu")
    config = tmp_path / "toy_cpu" / "val2014_train" / "config.yaml"
    written = config.read_text()
    wider = ["NETWORK.VLBERT.hidden_size", "48", "NETWORK.VLBERT.visual_size", "48", "NETWORK.IMAGE_FINAL_DIM", "48"]
    with pytest.raises(ResumeMismatchError) as error:
        fit(TASK, vqa_tiny_cfg(*out[:-1], "2", *wider), DistEnv(), "toy_cpu")
    message = str(error.value)
    assert str(tmp_path / "toy_cpu" / "val2014_train" / f"{PREFIX}-0000.model") in message
    assert "NETWORK.VLBERT.hidden_size: checkpoint 32, this run 48" in message
    assert "NETWORK.IMAGE_FINAL_DIM: checkpoint 32, this run 48" in message
    assert config.read_text() == written
