"""Build the DataLoader of one split for any task: dataset from the task, shard/grouped sampler, dict collate.

Randomness: the order depends on (RNG_SEED, epoch) only; workers of rank r are seeded per epoch from a generator
seeded with (RNG_SEED, r, epoch) (worker w gets that base + w). With TRAIN.PERSISTENT_WORKERS the workers are
seeded once, at the first epoch the process runs, so a resumed run repeats the data order but not the random
augmentation draws bit for bit; set PERSISTENT_WORKERS false (or NUM_WORKERS_PER_GPU 0) when that matters.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from common.config_node import ConfigNode
from common.data.collate import DictCollate
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
    if is_train and bool(cfg.TRAIN.LENGTH_BUCKETING):  # observability / GPU path: common/data/length_buckets.py
        batch_sampler = LengthBucketBatchSampler.for_dataset(dataset, batch_size, world, rank, shuffle, seed,
                                                             group_ids if bool(cfg.TRAIN.ASPECT_GROUPING) else None)
        loader = DataLoader(dataset, batch_sampler=batch_sampler, **kwargs)
    elif is_train and bool(cfg.TRAIN.ASPECT_GROUPING) and group_ids is not None:
        batch_sampler = GroupedBatchSampler(group_ids, batch_size, world, rank, shuffle=shuffle, seed=seed)
        loader = DataLoader(dataset, batch_sampler=batch_sampler, **kwargs)
    else:
        sampler = ShardSampler(len(dataset), world, rank, shuffle=shuffle, seed=seed, pad=is_train)
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=False, **kwargs)
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


def set_epoch(loader: BatchLoader, epoch: int) -> None:
    """New shuffle and new worker seeds for `epoch`, the same after a resume as in an uninterrupted run."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
        return
    for owner in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if owner is not None and hasattr(owner, "set_epoch"):
            owner.set_epoch(epoch)
    generator = getattr(loader, "generator", None)
    if generator is not None and hasattr(loader, "base_seed"):
        generator.manual_seed(loader.base_seed + 7919 * epoch)
