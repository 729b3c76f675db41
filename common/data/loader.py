"""Build the DataLoader of one split for any task: dataset from the task, shard/grouped sampler, dict collate.

Randomness: the order depends on (RNG_SEED, epoch) only, and every item's random draws on (RNG_SEED, epoch, index)
only (`common/data/item_seeding.py`: the global generators are seeded per item), so neither depends on the worker
that builds the item, on what that worker built before, on PERSISTENT_WORKERS or on NUM_WORKERS_PER_GPU. A loader
can also start part-way into an epoch (`set_epoch(loader, epoch, start_batch)`): the batches it then yields are
those the whole epoch yields from `start_batch` on, item for item and bit for bit (a mid-epoch resume).
"""
from __future__ import annotations

import inspect
import logging
import math
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from common.config_node import ConfigNode
from common.data.collate import DictCollate
from common.data.item_seeding import ItemSeededDataset
from common.data.length_buckets import LengthBucketBatchSampler
from common.data.samplers import GroupedBatchSampler, ShardSampler

if TYPE_CHECKING:  # the engine imports this module; these are for the annotations only
    from common.engine.dist import DistEnv
    from common.engine.task import BatchLoader, Task

log = logging.getLogger(__name__)

SPLIT_SECTIONS = {"train": "TRAIN", "val": "VAL", "test": "TEST"}


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and random in each worker from torch's per-worker seed (which the loader's generator fixes)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def split_batch_size(cfg: ConfigNode, split: str, dataset_index: int = 0) -> int:
    value = cfg[SPLIT_SECTIONS[split]].BATCH_IMAGES
    return int(value[dataset_index] if isinstance(value, (list, tuple)) else value)


def _loader_kwargs(dataset: Dataset, cfg: ConfigNode, persistent: bool, generator_seed: int) -> dict[str, Any]:
    workers = int(cfg.NUM_WORKERS_PER_GPU)
    return dict(
        num_workers=workers,
        collate_fn=DictCollate(getattr(dataset, "PAD_RULES", None)),
        pin_memory=bool(cfg.TRAIN.PIN_MEMORY) and torch.cuda.is_available(),
        persistent_workers=bool(cfg.TRAIN.PERSISTENT_WORKERS) and workers > 0 and persistent,
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(generator_seed),
    )


def make_loader(dataset: Dataset, cfg: ConfigNode, split: str, env: DistEnv | None, batch_size: int | None = None,
                seed_offset: int = 0) -> DataLoader:
    """A DataLoader over `dataset` for `split` with this rank's shard; the dataset's PAD_RULES drive collation."""
    section = cfg[SPLIT_SECTIONS[split]]
    is_train = split == "train"
    batch_size = batch_size or split_batch_size(cfg, split)
    seed = max(int(cfg.RNG_SEED), 0) + seed_offset
    world, rank = (env.world_size, env.rank) if env is not None else (1, 0)
    shuffle = bool(section.SHUFFLE) and is_train
    group_ids = dataset.aspect_groups() if hasattr(dataset, "aspect_groups") else None
    kwargs = _loader_kwargs(dataset, cfg, is_train, seed * 1000 + rank)
    seeded = ItemSeededDataset(dataset, seed)
    if is_train and bool(cfg.TRAIN.LENGTH_BUCKETING):  # observability / GPU path: common/data/length_buckets.py
        batch_sampler = LengthBucketBatchSampler.for_dataset(dataset, batch_size, world, rank, shuffle, seed,
                                                             group_ids if bool(cfg.TRAIN.ASPECT_GROUPING) else None)
        loader = DataLoader(seeded, batch_sampler=batch_sampler, **kwargs)
    elif is_train and bool(cfg.TRAIN.ASPECT_GROUPING) and group_ids is not None:
        batch_sampler = GroupedBatchSampler(group_ids, batch_size, world, rank, shuffle=shuffle, seed=seed)
        loader = DataLoader(seeded, batch_sampler=batch_sampler, **kwargs)
    else:
        sampler = ShardSampler(len(dataset), world, rank, shuffle=shuffle, seed=seed, pad=is_train)
        loader = DataLoader(seeded, batch_size=batch_size, sampler=sampler, drop_last=False, **kwargs)
    loader.base_seed = seed * 1000 + rank
    return loader


class DealtBatches(Sampler[list[int]]):
    """Batches of consecutive indices cut as one process would cut them, dealt round-robin to the ranks.

    Every batch is the same whatever the world size, so a sample meets the same neighbours (and the same padding)
    in a 1-process and an N-process run: the per-sample outputs of inference do not depend on the world size.
    Nothing is duplicated; a rank may get one batch fewer (or none).
    """

    def __init__(self, length: int, batch_size: int, world_size: int = 1, rank: int = 0):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        starts = range(0, length, batch_size)
        self.batches = [list(range(s, min(s + batch_size, length))) for s in starts][rank::world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def make_inference_loader(dataset: Dataset, cfg: ConfigNode, split: str, env: DistEnv | None,
                          batch_size: int | None = None) -> DataLoader:
    """The loader of `predict`: dataset order, `DealtBatches` of the split's BATCH_IMAGES (or `batch_size`)."""
    world, rank = (env.world_size, env.rank) if env is not None else (1, 0)
    batches = DealtBatches(len(dataset), batch_size or split_batch_size(cfg, split), world, rank)
    return DataLoader(dataset, batch_sampler=batches, **_loader_kwargs(dataset, cfg, False, 0))


def build_loader(task: Task, cfg: ConfigNode, split: str, env: DistEnv) -> BatchLoader:
    """The loader of `split`: the task's own `build_loader` when it has one (e.g. multi-task pre-training), else
    `make_loader` over `task.build_dataset(cfg, split)`."""
    if task.build_loader is not None:
        return task.build_loader(cfg, split, env)
    dataset = task.build_dataset(cfg, split)
    if len(dataset) == 0:
        raise ValueError(f"{task.name}: the {split} dataset is empty (check DATASET.{SPLIT_SECTIONS[split]}_IMAGE_SET "
                         f"and DATASET.DATASET_PATH)")
    return make_loader(dataset, cfg, split, env)


def set_epoch(loader: BatchLoader, epoch: int, start_batch: int = 0) -> None:
    """Place `loader` at batch `start_batch` of `epoch` (0: the whole epoch): its sampler's order, its dataset's
    epoch (item seeds, mask seeds) and its workers' seeds, the same after a resume as in an uninterrupted run.

    A loader with its own `set_epoch` (the multi-task loader) gets `set_epoch(epoch, start_batch)`, and so does the
    iterable dataset of a streaming DataLoader; a DataLoader whose sampler (or streaming dataset) cannot start
    part-way into an epoch refuses `start_batch > 0`.
    """
    if callable(getattr(loader, "set_epoch", None)):
        if start_batch:
            loader.set_epoch(epoch, start_batch)
        else:
            loader.set_epoch(epoch)
        return
    if _place_stream(loader, epoch, int(start_batch)):
        return
    _place_sampler(loader, epoch, int(start_batch))
    dataset = getattr(loader, "dataset", None)
    if callable(getattr(dataset, "set_epoch", None)):
        dataset.set_epoch(epoch)
    generator = getattr(loader, "generator", None)
    if generator is not None and hasattr(loader, "base_seed"):
        generator.manual_seed(loader.base_seed + 7919 * epoch)


def _place_stream(loader: DataLoader, epoch: int, start_batch: int) -> bool:
    """A DataLoader over an iterable dataset of batches (streaming shards) has no sampler to place: the dataset
    places itself with `set_epoch(epoch, start_batch)`. False for any other loader."""
    dataset = getattr(loader, "dataset", None)
    place = getattr(dataset, "set_epoch", None)
    if not isinstance(dataset, IterableDataset) or not callable(place):
        return False
    if not start_batch:
        place(epoch)
    elif "start_batch" in inspect.signature(place).parameters:
        place(epoch, start_batch=start_batch)
    else:
        raise ValueError(f"cannot start part-way into an epoch: the streaming dataset ({type(dataset).__name__}) has "
                         f"no start position (resume from an epoch checkpoint instead)")
    return True


def _place_sampler(loader: DataLoader, epoch: int, start_batch: int) -> None:
    """Sampler positions are in what they yield: batches for a batch sampler, indices for a sampler."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    if isinstance(batch_sampler, GroupedBatchSampler):
        batch_sampler.set_epoch(epoch, start_batch)
        return
    if isinstance(batch_sampler, LengthBucketBatchSampler):  # its next pass starts at `start_batch`
        batch_sampler.set_epoch(epoch)
        batch_sampler.skip(start_batch)
        return
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, ShardSampler):
        sampler.set_epoch(epoch, min(start_batch * int(loader.batch_size), sampler.epoch_length()))
        return
    if start_batch:
        raise ValueError(f"cannot start part-way into an epoch: the loader's sampler ({type(sampler).__name__}) has "
                         f"no start position (resume from an epoch checkpoint instead)")
    for owner in (sampler, batch_sampler):
        if owner is not None and callable(getattr(owner, "set_epoch", None)):
            owner.set_epoch(epoch)


def epoch_batches(loader: BatchLoader) -> int:
    """Batches of a whole epoch of `loader`, wherever it was placed in one."""
    if callable(getattr(loader, "epoch_length", None)):
        return int(loader.epoch_length())
    if isinstance(getattr(loader, "batch_sampler", None), GroupedBatchSampler):
        return loader.batch_sampler.epoch_length()
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, ShardSampler):
        return math.ceil(sampler.epoch_length() / int(loader.batch_size))
    return len(loader)
