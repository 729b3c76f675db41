"""Loaders that resume anywhere: a loader placed at batch k of an epoch yields what the whole epoch yields from batch
k on (indices and random draws), whatever the workers; persistent workers repeat a fresh loader's epoch; loading in
the main process leaves the training generators alone; the multi-task loader resumes its auxiliary streams."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from easydict import EasyDict
from test_loader import RandomDraws, make_cfg, task_for
from torch.utils.data import DataLoader

from common.data.loader import build_loader, epoch_batches, set_epoch
from common.data.multitask_loader import MultiTaskDataLoader
from common.data.samplers import GroupedBatchSampler, ShardSampler
from common.engine.dist import DistEnv


def batches(loader, epoch: int, start: int = 0) -> list[tuple[list[int], torch.Tensor]]:
    set_epoch(loader, epoch, start)
    return [(b["index"].tolist(), b["draw"]) for b in loader]


def assert_same(got, expected) -> None:
    assert [i for i, _ in got] == [i for i, _ in expected]
    for (_, a), (_, b) in zip(got, expected, strict=True):
        assert torch.equal(a, b)


def test_samplers_placed_part_way_yield_the_rest_of_the_epoch():
    sampler = ShardSampler(10, world_size=2, rank=1, shuffle=True, seed=4)
    sampler.set_epoch(3)
    whole = list(sampler)
    sampler.set_epoch(3, 2)
    assert list(sampler) == whole[2:] and len(sampler) == len(whole) - 2
    grouped = GroupedBatchSampler([0, 1] * 8, batch_size=2, world_size=2, rank=0, seed=4)
    grouped.set_epoch(5)
    whole = list(grouped)
    grouped.set_epoch(5, 3)
    assert list(grouped) == whole[3:] and len(grouped) == len(whole) - 3
    with pytest.raises(ValueError, match="outside the epoch"):
        grouped.set_epoch(5, len(whole) + 1)


@pytest.mark.parametrize("workers, grouping", [(0, False), (2, False), (2, True)])
def test_a_loader_placed_at_batch_k_repeats_the_whole_epochs_batches_from_k(workers, grouping):
    task = task_for(RandomDraws(22, [0, 1, 1] * 7 + [0]))
    cfg = make_cfg(workers=workers, grouping=grouping, persistent=True)
    whole = batches(build_loader(task, cfg, "train", DistEnv(rank=1, world_size=2)), 2)
    for start in (1, 3):
        resumed = build_loader(task, cfg, "train", DistEnv(rank=1, world_size=2))  # a fresh process
        got = batches(resumed, 2, start)
        assert len(resumed) == len(whole) - start and epoch_batches(resumed) == len(whole)
        assert_same(got, whole[start:])


def test_persistent_workers_repeat_a_fresh_loaders_epoch():
    task = task_for(RandomDraws(12))
    cfg = make_cfg(workers=2, persistent=True)
    running = build_loader(task, cfg, "train", DistEnv())
    batches(running, 0)
    assert_same(batches(running, 1), batches(build_loader(task, cfg, "train", DistEnv()), 1))


def test_loading_in_the_main_process_leaves_the_global_generators_alone():
    task = task_for(RandomDraws(8))
    loader = build_loader(task, make_cfg(workers=0), "train", DistEnv())

    def seed_and_draw(between=lambda: None):
        torch.manual_seed(11), np.random.seed(11), random.seed(11)
        between()
        return torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()

    expected = seed_and_draw()
    draws = []
    assert seed_and_draw(lambda: draws.extend(batches(loader, 0))) == expected  # dropout's stream untouched
    assert len({float(d[0, 0]) for _, d in draws}) == len(draws)  # the items still draw different numbers


def test_multitask_loader_resumes_master_and_auxiliary_streams():
    cfg = make_cfg()

    def loader():
        master = build_loader(task_for(RandomDraws(12)), cfg, "train", DistEnv())  # 6 batches of 2
        aux = build_loader(task_for(RandomDraws(5)), EasyDict(cfg, RNG_SEED=9), "train", DistEnv())  # 3 batches
        return MultiTaskDataLoader([master, aux])

    def epoch(multi, start=0):
        set_epoch(multi, 4, start)
        return [(b["index"].tolist(), b["aux_index"].tolist(), b["aux_draw"]) for b in multi]

    whole = epoch(loader())
    for start in (2, 3, 4):  # inside the first auxiliary pass, on its boundary, inside the second
        got = epoch(loader(), start)
        assert [b[:2] for b in got] == [b[:2] for b in whole[start:]]
        assert all(torch.equal(a[2], b[2]) for a, b in zip(got, whole[start:], strict=True))


def test_a_sampler_without_a_start_position_refuses_to_start_part_way():
    loader = DataLoader(RandomDraws(8), batch_size=2, sampler=torch.utils.data.RandomSampler(RandomDraws(8)))
    with pytest.raises(ValueError, match="no start position"):
        set_epoch(loader, 1, 2)


class Batched(RandomDraws):
    def __getitems__(self, indices):  # a dataset's own batch fetch would skip the per-item seeds
        raise AssertionError("the DataLoader fetched past the per-item seeding")


def test_the_item_seeding_wrapper_forwards_attributes_but_not_batch_fetching_and_pickles():
    import pickle

    from common.data.item_seeding import ItemSeededDataset

    wrapped = ItemSeededDataset(Batched(4, [0, 1, 0, 1]), seed=2)
    assert wrapped.PAD_RULES == {"draw": None} and wrapped.aspect_groups() == [0, 1, 0, 1]
    first = [b["draw"] for b in DataLoader(wrapped, batch_size=2)]
    again = [b["draw"] for b in DataLoader(pickle.loads(pickle.dumps(wrapped)), batch_size=2)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


class CountingStream(torch.utils.data.IterableDataset):
    """Batches {"index": [epoch * 100 + i]} for i in [start, 4): a streaming dataset that places itself."""

    def __init__(self):
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_batch

    def __iter__(self):
        return iter({"index": torch.tensor([self.epoch * 100 + i])} for i in range(self.start, 4))


class UnplaceableStream(CountingStream):
    def set_epoch(self, epoch: int) -> None:  # no start position
        self.epoch = epoch


def test_a_streaming_loader_is_placed_by_its_dataset_or_refuses_to_start_part_way():
    loader = DataLoader(CountingStream(), batch_size=None)
    set_epoch(loader, 2, 3)
    assert [b["index"].item() for b in loader] == [203]
    set_epoch(loader, 3)  # a whole epoch again: the start is reset
    assert [b["index"].item() for b in loader] == [300, 301, 302, 303]
    unplaceable = DataLoader(UnplaceableStream(), batch_size=None)
    set_epoch(unplaceable, 1)
    assert [b["index"].item() for b in unplaceable][:1] == [100]
    with pytest.raises(ValueError, match="UnplaceableStream.* has no start position"):
        set_epoch(unplaceable, 1, 2)


def test_a_length_bucketing_loader_placed_at_batch_k_yields_the_rest_of_its_epoch():
    from common.data.length_buckets import LengthBucketBatchSampler

    sampler = LengthBucketBatchSampler([3, 9, 1, 7, 5, 2, 8, 6, 4, 10, 11, 12], batch_size=2, seed=3)
    loader = DataLoader(list(range(12)), batch_sampler=sampler)
    set_epoch(loader, 2)
    whole = [b.tolist() for b in loader]
    set_epoch(loader, 2, 4)
    assert [b.tolist() for b in loader] == whole[4:] and epoch_batches(loader) == len(whole) == 6
    set_epoch(loader, 2)  # the next pass is a whole epoch again
    assert [b.tolist() for b in loader] == whole
