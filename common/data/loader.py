"""Build the DataLoader of one split for any task: dataset from the task, shard/grouped sampler, dict collate.

Randomness: the order depends on (RNG_SEED, epoch) only; workers of rank r are seeded per epoch from a generator
seeded with (RNG_SEED, r, epoch) (worker w gets that base + w). With TRAIN.PERSISTENT_WORKERS the workers are
seeded once, at the first epoch the process runs, so a resumed run repeats the data order but not the random
augmentation draws bit for bit; set PERSISTENT_WORKERS false (or NUM_WORKERS_PER_GPU 0) when that matters.
"""
from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from common.data.collate import DictCollate
from common.data.samplers import GroupedBatchSampler, ShardSampler

log = logging.getLogger(__name__)

SPLIT_SECTIONS = {"train": "TRAIN", "val": "VAL", "test": "TEST"}


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and random in each worker from torch's per-worker seed (which the loader's generator fixes)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def split_batch_size(cfg: Any, split: str, dataset_index: int = 0) -> int:
    value = cfg[SPLIT_SECTIONS[split]].BATCH_IMAGES
    return int(value[dataset_index] if isinstance(value, (list, tuple)) else value)


def make_loader(dataset: Dataset, cfg: Any, split: str, env: Any, batch_size: int | None = None,
                seed_offset: int = 0) -> DataLoader:
    """A DataLoader over `dataset` for `split` with this rank's shard; the dataset's PAD_RULES drive collation."""
    section = cfg[SPLIT_SECTIONS[split]]
    is_train = split == "train"
    batch_size = batch_size or split_batch_size(cfg, split)
    seed = max(int(cfg.RNG_SEED), 0) + seed_offset
    world, rank = getattr(env, "world_size", 1), getattr(env, "rank", 0)
    shuffle = bool(section.get("SHUFFLE", is_train)) and is_train
    group_ids = dataset.aspect_groups() if hasattr(dataset, "aspect_groups") else None
    workers = int(cfg.NUM_WORKERS_PER_GPU)
    kwargs: dict[str, Any] = dict(
        num_workers=workers,
        collate_fn=DictCollate(getattr(dataset, "PAD_RULES", None)),
        pin_memory=bool(cfg.TRAIN.get("PIN_MEMORY", True)) and torch.cuda.is_available(),
        persistent_workers=bool(cfg.TRAIN.get("PERSISTENT_WORKERS", True)) and workers > 0 and is_train,
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(seed * 1000 + rank),
    )
    if is_train and bool(cfg.TRAIN.get("ASPECT_GROUPING", False)) and group_ids is not None:
        batch_sampler = GroupedBatchSampler(group_ids, batch_size, world, rank, shuffle=shuffle, seed=seed)
        loader = DataLoader(dataset, batch_sampler=batch_sampler, **kwargs)
    else:
        sampler = ShardSampler(len(dataset), world, rank, shuffle=shuffle, seed=seed, pad=is_train)
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=False, **kwargs)
    loader.base_seed = seed * 1000 + rank
    return loader


def build_loader(task: Any, cfg: Any, split: str, env: Any) -> Any:
    """The loader of `split`; a task may supply its own builder as `task.extra["build_loader"]` (e.g. multi-task
    pre-training), called as builder(task, cfg, split, env, make_loader)."""
    custom = task.extra.get("build_loader") if getattr(task, "extra", None) else None
    if custom is not None:
        return custom(task, cfg, split, env, make_loader)
    dataset = task.build_dataset(cfg, split)
    if len(dataset) == 0:
        raise ValueError(f"{task.name}: the {split} dataset is empty (check DATASET.{SPLIT_SECTIONS[split]}_IMAGE_SET "
                         f"and DATASET.DATASET_PATH)")
    return make_loader(dataset, cfg, split, env)


def set_epoch(loader: Any, epoch: int) -> None:
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
