"""Mid-epoch resume of streaming pre-training (DATASET.FORMAT wds): a shard loader placed at batch k of a training
epoch yields the whole epoch's batches from k on, bit for bit, with 0 or 2 workers (persistent ones included); toy
pre-training on shards resumed from a step checkpoint, or killed with SIGKILL mid-epoch and restarted (1 and 2
processes), ends bit for bit as the uninterrupted run."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from test_pretrain_kill_resume import kill_and_resume
from torch.utils.data import DataLoader

from common.data.loader import set_epoch
from common.data.streaming import ShardBatches
from common.engine.checkpoint import load_checkpoint
from common.engine.dist import DistEnv
from common.engine.trainer import fit
from pretrain.task import TASK
from tests.checkpoint_tensors import checkpoint_tensors
from tests.pretrain.test_streaming import captions, same, shard_config

RUN = "toy_shards_cpu/train_train"
PREFIX = "vl-bert_toy_pretrain_multitask_shards"


def epoch_batches(loader: DataLoader, epoch: int, start: int = 0) -> list[dict]:
    set_epoch(loader, epoch, start)
    return list(loader)


@pytest.mark.parametrize("workers, persistent, resample", [(0, False, "true"), (2, True, "true"), (2, False, "false")])
def test_a_shard_loader_placed_at_batch_k_yields_the_epochs_batches_from_k(toy_shards, minilm_dir, workers,
                                                                           persistent, resample):
    """Resampled shards, or (RESAMPLE_SHARDS false) shard permutations; the shuffle buffer on; random flips."""
    cfg = shard_config(toy_shards, minilm_dir, "DATASET.0.SAMPLES_PER_EPOCH", "40", "TRAIN.FLIP_PROB", "0.5",
                       "DATASET.0.RESAMPLE_SHARDS", resample)
    batches = ShardBatches(captions(cfg), batch_size=4, num_workers=workers)
    loader = DataLoader(batches, batch_size=None, num_workers=workers, persistent_workers=persistent)
    whole = epoch_batches(loader, 2)
    assert len(whole) == len(batches) == 10
    for start in (1, 3, 4, 9, 10):
        rest = epoch_batches(loader, 2, start)
        assert len(rest) == len(whole) - start
        assert all(same(a, b) for a, b in zip(rest, whole[start:], strict=True)), f"start {start}"
    assert all(same(a, b) for a, b in zip(epoch_batches(loader, 2), whole, strict=True))  # a whole epoch again
    with pytest.raises(ValueError, match="cannot start at batch 11"):
        set_epoch(loader, 2, 11)


@pytest.mark.slow
def test_toy_pretraining_on_shards_resumed_mid_epoch_is_bitwise_identical(toy_shards, vocab_only_bert_dir, tmp_path,
                                                                         caplog):
    def config(out):
        return shard_config(toy_shards, vocab_only_bert_dir, "OUTPUT_PATH", str(out), "NETWORK.VLBERT.hidden_size",
                            "32", "NETWORK.VLBERT.visual_size", "32", "NETWORK.IMAGE_FINAL_DIM", "32",
                            "NETWORK.VLBERT.num_hidden_layers", "1", "NETWORK.VLBERT.num_attention_heads", "2",
                            "NETWORK.VLBERT.intermediate_size", "64", "TRAIN.BATCH_IMAGES", "[4, 4]",
                            "DATASET.0.SAMPLES_PER_EPOCH", "24", "TRAIN.END_EPOCH", "2", "NUM_WORKERS_PER_GPU", "2",
                            "VAL_FREQUENT", "0", "TRAIN.CHECKPOINT_EVERY_STEPS", "1", "TRAIN.KEEP_LAST", "0",
                            "TRAIN.AUTO_RESUME", "true")

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    fit(TASK, config(straight), DistEnv(), "toy_shards_cpu")  # 6 updates an epoch
    stop = straight / RUN / "steps" / f"{PREFIX}-e0001-s00000009.model"  # epoch 1 after batch 3 (odd: 2 workers)
    assert load_checkpoint(str(stop))["train_state"]["batches_done"] == 3
    (resumed / RUN / "steps").mkdir(parents=True)
    shutil.copy(stop, resumed / RUN / "steps")
    with caplog.at_level("INFO"):
        state = fit(TASK, config(resumed), DistEnv(), "toy_shards_cpu")
    assert f"steps/{stop.name}: epoch 1 after batch 3" in caplog.text
    assert state.global_step == 12
    expected, got = (load_checkpoint(str(out / RUN / f"{PREFIX}-0001.model")) for out in (straight, resumed))
    assert got["train_state"] == expected["train_state"]
    expected_tensors, got_tensors = checkpoint_tensors(expected), checkpoint_tensors(got)
    assert got_tensors.keys() == expected_tensors.keys()
    different = [key for key, value in expected_tensors.items() if not torch.equal(got_tensors[key], value)]
    assert not different, f"{len(different)} of {len(expected_tensors)} tensors differ, e.g. {different[:5]}"


def shard_overrides(shards: str, bert: str, out: Path, per_process: list[int]) -> list[str]:
    """Tiny model on the toy shards, 40 captions an epoch in 10 updates, 2 persistent workers, a step file every 3."""
    return ["OUTPUT_PATH", str(out), "DATASET.0.DATASET_PATH", shards, "DATASET.1.DATASET_PATH", shards,
            "NETWORK.BERT_MODEL_NAME", bert, "NETWORK.VLBERT.hidden_size", "32", "NETWORK.VLBERT.visual_size", "32",
            "NETWORK.IMAGE_FINAL_DIM", "32", "NETWORK.VLBERT.num_hidden_layers", "1",
            "NETWORK.VLBERT.num_attention_heads", "2", "NETWORK.VLBERT.intermediate_size", "64",
            "TRAIN.BATCH_IMAGES", str(per_process), "DATASET.0.SAMPLES_PER_EPOCH", "40", "TRAIN.END_EPOCH", "2",
            "NUM_WORKERS_PER_GPU", "2", "VAL_FREQUENT", "0", "LOG_FREQUENT", "100", "TRAIN.AUTO_RESUME", "true",
            "TRAIN.CHECKPOINT_EVERY_STEPS", "3", "TRAIN.KEEP_LAST", "0"]


@pytest.mark.slow
@pytest.mark.parametrize("launcher, per_process", [(["./scripts/nondist_run.sh"], [4, 4]),
                                                   (["./scripts/dist_run_single.sh", "2"], [2, 2])])
def test_pretraining_on_shards_killed_mid_epoch_resumes_bitwise(toy_shards, vocab_only_bert_dir, tmp_path, launcher,
                                                               per_process):
    kill_and_resume(launcher, "cfgs/pretrain/toy_shards_cpu.yaml", RUN, PREFIX,
                    lambda out: shard_overrides(toy_shards, vocab_only_bert_dir, out, per_process), tmp_path)


def test_a_shard_run_records_its_loader_workers_and_resuming_under_another_number_warns(toy_shards, minilm_dir,
                                                                                      caplog):
    """The workers deal the shard streams out, so a mid-epoch position means other samples under another number."""
    from common.data.loader import build_loader
    from common.engine.run import data_layout
    from common.engine.state import TrainState

    cfg = shard_config(toy_shards, minilm_dir, "NUM_WORKERS_PER_GPU", "2")
    layout = data_layout(cfg, build_loader(TASK, cfg, "train", DistEnv()), DistEnv())
    assert layout["loader_workers"] == 2
    state = TrainState(layout=layout)
    with caplog.at_level("WARNING"):
        state.load_state_dict({"epoch": 1, "batches_done": 3, "layout": {**layout, "loader_workers": 0}})
    assert state.batches_done == 3 and state.layout == layout
    assert "'loader_workers': 0" in caplog.text and "not the uninterrupted run's" in caplog.text
    caplog.clear()
    older = {key: value for key, value in layout.items() if key != "loader_workers"}  # written before it was recorded
    with caplog.at_level("WARNING"):
        TrainState(layout=layout).load_state_dict({"epoch": 1, "batches_done": 3, "layout": older})
    assert "another data layout" not in caplog.text
