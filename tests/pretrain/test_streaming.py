"""Streaming pre-training from shards (DATASET.FORMAT wds) on the small toy world: items equal the file datasets'
items of the same index and epoch, every rank yields the same number of full batches, evaluation splits the
samples exactly, and bad input (corrupt member, cut tar, missing shard, too many bad samples) is named and
handled."""
from __future__ import annotations

import logging
import math
import os
import shutil
import tarfile

import pytest
import torch
from torch.utils.data import DataLoader

from common.config import dataset_sections, load_config
from common.data.preflight import check_data
from common.data.shards import ShardError, iter_shard
from common.data.streaming import BadDataError, ShardBatches
from pretrain.config import add_pretrain_defaults
from pretrain.datasets import build_section_dataset
from pretrain.datasets.general_corpus import CorpusSampleBuilder, GeneralCorpusDataset
from pretrain.datasets.streaming import CorpusShardSource
from pretrain.task import TASK
from tests.pretrain.conftest import write_toy_shards

SHARDS_CFG, FILES_CFG = "cfgs/pretrain/toy_shards_cpu.yaml", "cfgs/pretrain/toy_cpu.yaml"


def shard_config(shards: str, minilm_dir: str, *extra: str):
    overrides = ["NETWORK.BERT_MODEL_NAME", minilm_dir, "DATASET.0.DATASET_PATH", shards,
                 "DATASET.1.DATASET_PATH", shards, *extra]
    return load_config(SHARDS_CFG, overrides, add_task_defaults=add_pretrain_defaults)


def captions(cfg, split: str = "train"):
    return build_section_dataset(cfg, dataset_sections(cfg)[0], split)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


def corrupt_member(shard: str, name: str) -> None:
    """Overwrite one member's bytes in place (same size, so the shard's record still matches it)."""
    with tarfile.open(shard) as archive:
        info = archive.getmember(name)
    with open(shard, "r+b") as handle:
        handle.seek(info.offset_data)
        handle.write(b"\x00garbage" * (info.size // 8) + b"\x00" * (info.size % 8))


@pytest.mark.parametrize("precomputed", ["true", "false"])
def test_shard_items_equal_file_items(toy_root, toy_shards, minilm_dir, precomputed):
    common = ["NETWORK.IMAGE_FEAT_PRECOMPUTED", precomputed, "TRAIN.FLIP_PROB", "0.5"]
    stream = captions(shard_config(toy_shards, minilm_dir, *common))
    files_cfg = load_config(FILES_CFG, ["NETWORK.BERT_MODEL_NAME", minilm_dir, "DATASET.0.DATASET_PATH",
                                        os.path.join(toy_root, "conceptual-captions"), *common],
                            add_task_defaults=add_pretrain_defaults)
    files = captions(files_cfg)
    for epoch in (0, 3):
        stream.set_epoch(epoch)
        files.set_epoch(epoch)
        items = list(stream)  # every shard in order: record order
        assert [item["index"] for item in items] == list(range(len(files)))
        assert all(same(item, files[item["index"]]) for item in items)


def test_single_shard_corpus_equals_the_file_corpus(toy_root, tokenizer, tmp_path):
    corpus = os.path.join(toy_root, "en_corpus", "bc1g.doc")
    from data.make_shards import main

    assert main(["corpus", "--input", corpus, "--out", str(tmp_path), "--samples-per-shard", "1000"]) == 0
    files = GeneralCorpusDataset(corpus, tokenizer, seq_len=32, min_seq_len=16, seed=5)
    source = CorpusShardSource(CorpusSampleBuilder(tokenizer, 32), min_seq_len=16, seed=5)
    from common.data.streaming import ShardSamples

    stream = ShardSamples([str(tmp_path / "corpus-000000.tar")], source, train=False, seed=5)
    for epoch in (0, 2):
        stream.set_epoch(epoch)
        files.set_epoch(epoch)
        items = list(stream)
        assert len(items) == len(files) and all(same(item, files[item["index"]]) for item in items)


@pytest.mark.parametrize("workers", [0, 2])
def test_every_rank_yields_the_same_number_of_full_batches(toy_shards, minilm_dir, workers):
    samples = captions(shard_config(toy_shards, minilm_dir, "DATASET.0.SAMPLES_PER_EPOCH", "40"))
    for world in (1, 2, 3):
        for rank in range(world):
            batches = ShardBatches(samples, 8, world, rank, workers)
            got = list(DataLoader(batches, batch_size=None, num_workers=workers))
            assert len(got) == len(batches) == math.ceil(40 / (world * 8))
            assert all(batch["text"].shape[0] == 8 for batch in got)


def test_training_stream_is_seeded_by_epoch_and_rank(toy_shards, minilm_dir):
    samples = captions(shard_config(toy_shards, minilm_dir))

    def epoch_of(rank: int, epoch: int) -> list:
        samples.set_epoch(epoch)
        return [(b["index"].tolist(), b["mlm_labels"]) for b in ShardBatches(samples, 8, 2, rank)]

    first = epoch_of(0, 0)
    again = epoch_of(0, 0)
    assert [i for i, _ in first] == [i for i, _ in again]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(first, again, strict=True))
    assert [i for i, _ in epoch_of(0, 1)] != [i for i, _ in first]
    assert [i for i, _ in epoch_of(1, 0)] != [i for i, _ in first]


def test_permuted_shards_read_every_sample_once_per_epoch(toy_shards, minilm_dir):
    samples = captions(shard_config(toy_shards, minilm_dir, "DATASET.0.RESAMPLE_SHARDS", "false",
                                    "DATASET.0.SHUFFLE_BUFFER", "0"))  # a buffer mixes in the next permutation
    for epoch in (0, 1):
        samples.set_epoch(epoch)
        indices = [i for batch in ShardBatches(samples, 8) for i in batch["index"].tolist()]
        assert sorted(indices) == list(range(40))


@pytest.mark.parametrize("workers", [0, 2])
def test_evaluation_gives_each_sample_to_one_rank(toy_shards, minilm_dir, workers):
    samples = captions(shard_config(toy_shards, minilm_dir), "val")
    seen = []
    for rank in range(3):
        batches = ShardBatches(samples, 3, 3, rank, workers)
        got = list(DataLoader(batches, batch_size=None, num_workers=workers))
        assert len(got) == len(batches)
        seen += [i for batch in got for i in batch["index"].tolist()]
    assert sorted(seen) == list(range(10))


def test_corrupt_member_is_skipped_named_and_counted(toy_shards, minilm_dir, tmp_path, caplog):
    shards = str(tmp_path / "shards")
    shutil.copytree(toy_shards, shards)
    corrupt_member(os.path.join(shards, "train-000001.tar"), "000000010.features.npy")
    samples = captions(shard_config(shards, minilm_dir, "DATASET.0.RESAMPLE_SHARDS", "false",
                                    "DATASET.0.MAX_BAD_SAMPLE_FRACTION", "0.05"))  # 1 of 41 read
    batches = ShardBatches(samples, 8)
    with caplog.at_level(logging.WARNING):
        got = list(batches)
    assert len(got) == len(batches) == 5 and all(batch["text"].shape[0] == 8 for batch in got)
    assert batches.bad_sample_counts()[1] == 1
    assert "train-000001.tar key '000000010'" in caplog.text and "features.npy" in caplog.text


def test_cut_shard_names_shard_and_key(toy_shards, tmp_path):
    original, shard = os.path.join(toy_shards, "train-000002.tar"), str(tmp_path / "train-000002.tar")
    with tarfile.open(original) as archive:
        inside = archive.getmember("000000019.classes.npy").offset_data + 100  # within a member
        boundary = archive.getmember("000000019.boxes.npy").offset  # between two samples
    shutil.copy(original, shard)
    os.truncate(shard, inside)
    with pytest.raises(ShardError, match=r"train-000002\.tar: truncated .* after key '000000018'.*'000000019'"):
        list(iter_shard(shard))
    shutil.copy(original, shard)
    os.truncate(shard, boundary)  # reads as a shorter archive: found by the count
    with pytest.raises(ShardError, match=r"train-000002\.tar: ends after key '000000018' with 3 of its 8 samples"):
        list(iter_shard(shard, expected=8))


def test_cut_shard_in_a_run_is_skipped_and_counted(toy_shards, minilm_dir, tmp_path, caplog):
    shards = str(tmp_path / "shards")
    shutil.copytree(toy_shards, shards)
    os.truncate(os.path.join(shards, "train-000004.tar"), 20000)
    samples = captions(shard_config(shards, minilm_dir, "DATASET.0.RESAMPLE_SHARDS", "false",
                                    "DATASET.0.MAX_BAD_SAMPLE_FRACTION", "0.5"))
    batches = ShardBatches(samples, 8)
    with caplog.at_level(logging.WARNING):
        assert len(list(batches)) == 5
    assert "train-000004.tar" in caplog.text and "key" in caplog.text
    assert batches.bad_sample_counts()[1] >= 6  # the samples the cut shard lost


def test_missing_shard_is_named_at_start_and_in_the_preflight(toy_shards, minilm_dir, tmp_path):
    cfg = shard_config(toy_shards, minilm_dir, "DATASET.0.TRAIN_SHARDS", "train-{000000..000005}.tar")
    with pytest.raises(ShardError, match=r"1 of 6 shards not found: .*train-000005\.tar"):
        captions(cfg)
    problems = check_data(cfg, TASK, bert_folder=False, splits=("TRAIN",))
    assert any("train-000005.tar" in p and "DATASET[0].TRAIN_SHARDS" in p for p in problems), problems


@pytest.mark.parametrize("workers", [0, 1])
def test_too_many_bad_samples_stop_with_a_clear_error(toy_shards, minilm_dir, tmp_path, workers):
    shards = str(tmp_path / "shards")
    shutil.copytree(toy_shards, shards)
    for index in range(8):
        corrupt_member(os.path.join(shards, "train-000000.tar"), f"{index:09d}.json")
    samples = captions(shard_config(shards, minilm_dir, "DATASET.0.MAX_BAD_SAMPLE_FRACTION", "0.1",
                                    "DATASET.0.RESAMPLE_SHARDS", "false", "DATASET.0.SAMPLES_PER_EPOCH", "80"))
    loader = DataLoader(ShardBatches(samples, 8, num_workers=workers), batch_size=None, num_workers=workers)
    with pytest.raises(BadDataError, match=r"\d+ of \d+ samples read on rank 0 are bad, more than "
                                           r"DATASET.MAX_BAD_SAMPLE_FRACTION=0.1; last: .*train-000000\.tar key"):
        list(loader)


def test_shards_without_the_mode_s_content_are_refused(toy_root, minilm_dir, tmp_path):
    shards = write_toy_shards(toy_root, str(tmp_path), content="features")
    with pytest.raises(ValueError, match="holds features only, but NETWORK.IMAGE_FEAT_PRECOMPUTED is False"):
        captions(shard_config(shards, minilm_dir, "NETWORK.IMAGE_FEAT_PRECOMPUTED", "false"))
    with pytest.raises(ValueError, match=r"FORMAT must be one of \['files', 'wds'\], found 'tar'"):
        captions(shard_config(shards, minilm_dir, "DATASET.0.FORMAT", "tar"))
