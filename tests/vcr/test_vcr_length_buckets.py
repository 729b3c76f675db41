"""TRAIN.LENGTH_BUCKETING on VCR: the length proxy of each item, and the training loader batching by it."""
from __future__ import annotations

import pytest
from vcr_fixtures import tiny_cfg, vcr_line, write_vcr_dir

from common.data.length_buckets import LengthBucketBatchSampler
from common.data.loader import make_loader
from vcr.task import build_vcr_dataset as build_dataset

QUESTION = ["What", "are", [1, 3], "doing", "?"]  # 5 entries (an object list counts as one)
SHORT = [["Eating", "."], ["No"], ["Yes"], ["Maybe"]]  # longest 2
LONG = [["Because", [0], "is", "very", "hungry", "now"], ["No"], ["Yes"], ["Maybe"]]  # longest 6


@pytest.fixture
def vcr_root(tmp_path):
    lines = [vcr_line(n, "train", QUESTION[:1 + n % 5], SHORT if n % 2 else LONG, LONG, 0, 0) for n in range(24)]
    return write_vcr_dir(str(tmp_path / "vcr"), {"train": lines, "val": lines[:4]})


def test_sample_lengths_count_question_longest_choice_and_objects(vcr_root, vocab_only_dir):
    """Q2A: question words + longest answer + 4 objects; QA2R: question + the labelled answer + longest rationale."""
    q2a = build_dataset(tiny_cfg(vocab_only_dir, vcr_root), "train")
    assert q2a.sample_lengths()[:3] == [1 + 6 + 4, 2 + 2 + 4, 3 + 6 + 4]
    qa2r = build_dataset(tiny_cfg(vocab_only_dir, vcr_root, yaml_path="cfgs/vcr/toy_qa2r_cpu.yaml"), "train")
    assert qa2r.sample_lengths()[:2] == [1 + 6 + 6 + 4, 2 + 2 + 6 + 4]


def test_the_training_loader_batches_by_length(vcr_root, vocab_only_dir):
    cfg = tiny_cfg(vocab_only_dir, vcr_root, "TRAIN.LENGTH_BUCKETING", "true", "TRAIN.BATCH_IMAGES", "4")
    dataset = build_dataset(cfg, "train")
    loader = make_loader(dataset, cfg, "train", None)
    assert isinstance(loader.batch_sampler, LengthBucketBatchSampler)
    lengths = dataset.sample_lengths()
    spreads = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in loader.batch_sampler]
    assert len(spreads) == 6 and max(spreads) <= 2  # 24 items of 5 distinct lengths (9..15), sorted in one pool
