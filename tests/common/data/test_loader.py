"""build_loader: shards per rank, aspect grouping when the dataset offers it, reproducible worker randomness."""
from __future__ import annotations

import random

import numpy as np
import torch
from easydict import EasyDict
from torch.utils.data import Dataset

from common.data.loader import build_loader, set_epoch
from common.engine.dist import DistEnv
from common.engine.task import Task


class RandomDraws(Dataset):
    """Item i carries random draws made inside __getitem__ (as an augmentation would)."""

    PAD_RULES = {"draw": None}

    def __init__(self, size: int, groups: list[int] | None = None):
        self.size, self.groups = size, groups

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        return {"index": index, "draw": torch.tensor([random.random(), float(np.random.rand())])}

    def aspect_groups(self):
        return self.groups


def make_cfg(workers=0, grouping=False, shuffle=True, persistent=False):
    return EasyDict(RNG_SEED=5, NUM_WORKERS_PER_GPU=workers,
                    TRAIN=dict(BATCH_IMAGES=2, SHUFFLE=shuffle, ASPECT_GROUPING=grouping, PIN_MEMORY=False,
                               PERSISTENT_WORKERS=persistent, LENGTH_BUCKETING=False),
                    VAL=dict(BATCH_IMAGES=3, SHUFFLE=False))


def task_for(dataset):
    return Task(name="t", add_defaults=lambda cfg: None, build_dataset=lambda cfg, split: dataset, modules={},
                build_metrics=lambda cfg: [])


def epoch_indices(loader, epoch):
    set_epoch(loader, epoch)
    return [b["index"].tolist() for b in loader]


def test_train_shards_of_two_ranks_cover_the_epoch_and_change_with_it():
    task = task_for(RandomDraws(10))
    loaders = [build_loader(task, make_cfg(), "train", DistEnv(rank=r, world_size=2)) for r in range(2)]
    epoch0 = [epoch_indices(loader, 0) for loader in loaders]
    assert len(epoch0[0]) == len(epoch0[1]) == 3  # 5 samples per rank in batches of 2
    assert sorted(i for rank in epoch0 for b in rank for i in b) == list(range(10))
    assert [epoch_indices(loader, 1) for loader in loaders] != epoch0


def test_validation_loader_keeps_dataset_order_without_padding():
    task = task_for(RandomDraws(7))
    shards = [build_loader(task, make_cfg(), "val", DistEnv(rank=r, world_size=2)) for r in range(2)]
    assert [epoch_indices(s, 0) for s in shards] == [[[0, 2, 4], [6]], [[1, 3, 5]]]


def test_aspect_grouping_is_used_when_the_dataset_has_groups():
    groups = [0, 1] * 6
    task = task_for(RandomDraws(12, groups))
    loader = build_loader(task, make_cfg(grouping=True), "train", DistEnv())
    for batch in epoch_indices(loader, 0):
        assert len({groups[i] for i in batch}) == 1


def test_worker_randomness_is_a_function_of_seed_rank_and_epoch():
    task = task_for(RandomDraws(8))

    def draws(epoch, rank=0):
        loader = build_loader(task, make_cfg(workers=2, shuffle=False), "train", DistEnv(rank=rank, world_size=2))
        set_epoch(loader, epoch)
        return torch.cat([b["draw"] for b in loader])

    first = draws(3)
    torch.testing.assert_close(draws(3), first, rtol=0, atol=0)  # a fresh loader (a resumed run) repeats it
    assert not torch.equal(draws(4), first)
    assert not torch.equal(draws(3, rank=1), first)
