"""Samplers shared by all tasks: a distributed shard sampler and an aspect-ratio grouped batch sampler.

Both give every rank the same number of batches (so DDP never waits on a rank that ran out) and a new order each
epoch from a permutation that all ranks compute alike from (seed, epoch). `set_epoch(epoch, start)` also places
them `start` items into that epoch's order (a mid-epoch resume): they then yield the rest of the same order, having
drawn nothing else.
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


def check_start(start: int, length: int, owner: str) -> int:
    """A start position within an epoch of `length` items (the end included: an epoch finished but not closed)."""
    if not 0 <= int(start) <= length:
        raise ValueError(f"{owner}: start position {start} is outside the epoch of {length}")
    return int(start)


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
        self.shuffle, self.seed, self.pad, self.epoch, self.start = shuffle, seed, pad, 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The order of `epoch`, without its first `start` indices of this rank (those already trained on)."""
        self.epoch, self.start = int(epoch), check_start(start, self.epoch_length(), "ShardSampler")

    def _order(self) -> list[int]:
        order = epoch_permutation(self.length, self.seed, self.epoch, self.shuffle)
        if self.pad and self.length > 0:
            total = math.ceil(self.length / self.world_size) * self.world_size
            order = (order * math.ceil(total / self.length))[:total]
        return order

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.rank::self.world_size][self.start:])

    def epoch_length(self) -> int:
        """Indices of this rank in a whole epoch."""
        if self.pad:
            return math.ceil(self.length / self.world_size)
        return len(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return self.epoch_length() - self.start


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
        self.shuffle, self.seed, self.epoch, self.start = shuffle, seed, 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The batches of `epoch`, without the first `start` of them (those already trained on)."""
        self.epoch, self.start = int(epoch), check_start(start, self.epoch_length(), "GroupedBatchSampler")

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
        first = self.rank * self.batch_size
        for chunk in self._chunks()[self.start:]:
            yield chunk[first:first + self.batch_size]

    def epoch_length(self) -> int:
        """Batches of this rank in a whole epoch."""
        chunk = self.batch_size * self.world_size
        counts = {}
        for g in self.group_ids:
            counts[g] = counts.get(g, 0) + 1
        return sum(math.ceil(c / chunk) for c in counts.values())

    def __len__(self) -> int:
        return self.epoch_length() - self.start
