"""A batch sampler that puts training samples of similar length together (TRAIN.LENGTH_BUCKETING), so that a batch
pads its sequences to little more than its own longest one: VCR's packed lengths vary ~3x between questions.

Deterministic and resumable: the batches of an epoch are a function of (lengths, groups, seed, epoch, world size)
only, and `skip(n)` starts the next pass at batch n (a resume in the middle of an epoch gets the batches it has not
seen). Every rank gets the same number of batches, as with the other samplers (common/data/samplers.py).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler

from common.data.samplers import epoch_permutation

# Samples sorted together: this many global batches. Larger = tighter lengths, less randomness of batch contents.
POOL_BATCHES = 50


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Each epoch: permute the indices (same on every rank), split them by group (e.g. aspect ratio; one group when
    `group_ids` is None), cut each group into pools of POOL_BATCHES global batches, sort each pool by length
    (longest first), cut it into global chunks of `batch_size x world_size` (a group's last chunk is filled by
    wrapping around within the group), shuffle the chunks, and give rank r the r-th slice of every chunk."""

    def __init__(self, lengths: Sequence[int], batch_size: int, world_size: int = 1, rank: int = 0,
                 shuffle: bool = True, seed: int = 0, group_ids: Sequence[int] | None = None,
                 pool_batches: int = POOL_BATCHES):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        if group_ids is not None and len(group_ids) != len(lengths):
            raise ValueError(f"{len(group_ids)} group ids for {len(lengths)} lengths")
        self.lengths = [int(n) for n in lengths]
        self.group_ids = [int(g) for g in group_ids] if group_ids is not None else [0] * len(self.lengths)
        self.batch_size, self.world_size, self.rank = int(batch_size), int(world_size), int(rank)
        self.shuffle, self.seed, self.pool_batches = shuffle, int(seed), max(int(pool_batches), 1)
        self.epoch, self._start = 0, 0

    @classmethod
    def for_dataset(cls, dataset, batch_size: int, world_size: int, rank: int, shuffle: bool, seed: int,
                    group_ids: Sequence[int] | None) -> LengthBucketBatchSampler:
        """TRAIN.LENGTH_BUCKETING on a dataset that has `sample_lengths()` (e.g. VCR); a clear error otherwise."""
        if not hasattr(dataset, "sample_lengths"):
            raise ValueError(f"TRAIN.LENGTH_BUCKETING: {type(dataset).__name__} has no sample_lengths(); "
                             f"set TRAIN.LENGTH_BUCKETING false for this task")
        return cls(dataset.sample_lengths(), batch_size, world_size, rank, shuffle=shuffle, seed=seed,
                   group_ids=group_ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip(self, batches: int) -> None:
        """The next pass starts at batch `batches` of the epoch (mid-epoch resume); later passes start at 0."""
        self._start = int(batches)

    def _group_chunks(self, members: list[int]) -> list[list[int]]:
        chunk = self.batch_size * self.world_size
        count = math.ceil(len(members) / chunk)
        members = (members * math.ceil(count * chunk / len(members)))[:count * chunk]
        pool = chunk * self.pool_batches
        chunks = []
        for start in range(0, len(members), pool):
            ordered = sorted(members[start:start + pool], key=lambda i: -self.lengths[i])  # stable: ties keep order
            chunks += [ordered[k:k + chunk] for k in range(0, len(ordered), chunk)]
        return chunks

    def chunks(self) -> list[list[int]]:
        """The epoch's global chunks (batch_size x world_size indices each), in order."""
        order = epoch_permutation(len(self.lengths), self.seed, self.epoch, self.shuffle)
        chunks: list[list[int]] = []
        for group in sorted(set(self.group_ids)):
            members = [i for i in order if self.group_ids[i] == group]
            chunks += self._group_chunks(members)
        chunk_order = epoch_permutation(len(chunks), self.seed + 1, self.epoch, self.shuffle)
        return [chunks[k] for k in chunk_order]

    def __iter__(self) -> Iterator[list[int]]:
        start, self._start = self._start, 0
        offset = self.rank * self.batch_size
        for chunk in self.chunks()[start:]:
            yield chunk[offset:offset + self.batch_size]

    def __len__(self) -> int:
        chunk = self.batch_size * self.world_size
        counts: dict[int, int] = {}
        for g in self.group_ids:
            counts[g] = counts.get(g, 0) + 1
        return sum(math.ceil(c / chunk) for c in counts.values())
