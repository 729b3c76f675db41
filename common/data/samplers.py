"""Samplers shared by all tasks: a distributed shard sampler and an aspect-ratio grouped batch sampler.

Both give every rank the same number of batches (so DDP never waits on a rank that ran out) and a new order each
epoch from a permutation that all ranks compute alike from (seed, epoch).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def epoch_permutation(length: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    if not shuffle:
        return list(range(length))
    generator = torch.Generator().manual_seed(int(seed) + int(epoch))
    return torch.randperm(length, generator=generator).tolist()


class ShardSampler(Sampler[int]):
    """Indices of this rank: rank r takes positions r, r + world, ... of the epoch's order.

    With `pad=True` (training) the order is padded by wrapping around so every rank has the same count. With
    `pad=False` (validation/test) nothing is duplicated: ranks may differ by one sample, which is harmless since
    evaluation runs no collective per batch, and the metrics then count every sample exactly once.
    """

    def __init__(self, length: int, world_size: int = 1, rank: int = 0, shuffle: bool = False, seed: int = 0,
                 pad: bool = True):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.length, self.world_size, self.rank = length, world_size, rank
        self.shuffle, self.seed, self.pad, self.epoch = shuffle, seed, pad, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        order = epoch_permutation(self.length, self.seed, self.epoch, self.shuffle)
        if self.pad and self.length > 0:
            total = math.ceil(self.length / self.world_size) * self.world_size
            order = (order * math.ceil(total / self.length))[:total]
        return order

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.rank::self.world_size])

    def __len__(self) -> int:
        if self.pad:
            return math.ceil(self.length / self.world_size)
        return len(range(self.rank, self.length, self.world_size))


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches whose samples share a group id (e.g. landscape vs portrait), identical batch count on every rank.

    Each epoch: permute all indices (same on every rank), split them by group, cut each group into global chunks of
    `batch_size x world_size` (the last chunk of a group is filled by wrapping around within the group), shuffle the
    chunks, and give rank r the r-th slice of every chunk. `drop_last` is implied for nothing: no sample is lost.
    """

    def __init__(self, group_ids: Sequence[int], batch_size: int, world_size: int = 1, rank: int = 0,
                 shuffle: bool = True, seed: int = 0):
        self.group_ids = [int(g) for g in group_ids]
        self.batch_size, self.world_size, self.rank = batch_size, world_size, rank
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _chunks(self) -> list[list[int]]:
        order = epoch_permutation(len(self.group_ids), self.seed, self.epoch, self.shuffle)
        chunk = self.batch_size * self.world_size
        chunks: list[list[int]] = []
        for group in sorted(set(self.group_ids)):
            members = [i for i in order if self.group_ids[i] == group]
            count = math.ceil(len(members) / chunk)
            members = (members * math.ceil(count * chunk / len(members)))[:count * chunk]
            chunks += [members[k * chunk:(k + 1) * chunk] for k in range(count)]
        chunk_order = epoch_permutation(len(chunks), self.seed + 1, self.epoch, self.shuffle)
        return [chunks[k] for k in chunk_order]

    def __iter__(self) -> Iterator[list[int]]:
        start = self.rank * self.batch_size
        for chunk in self._chunks():
            yield chunk[start:start + self.batch_size]

    def __len__(self) -> int:
        chunk = self.batch_size * self.world_size
        counts = {}
        for g in self.group_ids:
            counts[g] = counts.get(g, 0) + 1
        return sum(math.ceil(c / chunk) for c in counts.values())
