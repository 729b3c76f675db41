"""Several data loaders stepped together: each batch of the first (master) loader gets the next batch of every
auxiliary loader merged in under a key prefix (`aux_text`, `aux_mlm_labels`, ...).

The master loader defines the epoch and its length; an auxiliary loader that runs out restarts with a fresh
shuffle. Every loader's sampler gets `set_epoch` each epoch (and each auxiliary restart gets its own derived
epoch), and the iterators are created only when an epoch starts, so distributed shards and shuffles are right.
`set_epoch(epoch, start_batch)` starts part-way into an epoch (a mid-epoch resume): the master skips its first
`start_batch` batches and each auxiliary loader is placed where `start_batch` master batches left it (the same
restart, the same batch in it), so the rest of the epoch is the uninterrupted epoch's, batch for batch.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

from common.data.loader import epoch_batches
from common.data.loader import set_epoch as set_loader_epoch

log = logging.getLogger(__name__)


def aux_prefixes(count: int) -> list[str]:
    """Key prefixes of the auxiliary loaders: 'aux_', then 'aux2_', 'aux3_', ..."""
    return ["aux_" if k == 0 else f"aux{k + 1}_" for k in range(count)]


class _AuxStream:
    """Endless batches of one auxiliary loader; restart k of epoch e uses the sampler epoch e * stride + k.

    `consumed` batches of the epoch already done place the stream at restart consumed // length, batch
    consumed % length of it."""

    def __init__(self, loader, epoch: int, stride: int, length: int, consumed: int = 0):
        self.loader, self.epoch, self.stride = loader, epoch, stride
        self.restarts, self.skip = divmod(consumed, max(length, 1))
        self.iterator: Iterator | None = None

    def _start(self) -> None:
        set_loader_epoch(self.loader, self.epoch * self.stride + self.restarts, self.skip)
        self.skip = 0
        self.iterator = iter(self.loader)

    def next(self) -> dict:
        if self.iterator is None:
            self._start()
        try:
            return next(self.iterator)
        except StopIteration:
            self.restarts += 1
        if self.restarts >= self.stride:
            raise RuntimeError(f"auxiliary loader restarted {self.restarts} times in one epoch; is it empty?")
        self._start()
        try:
            return next(self.iterator)
        except StopIteration:
            raise RuntimeError("auxiliary loader yields no batch (empty dataset, or drop_last with too "
                               "few samples per rank)") from None


class MultiTaskDataLoader:
    """Zip a master loader with auxiliary loaders; batches are dicts, auxiliary keys get `prefixes`."""

    def __init__(self, loaders: Sequence[Any], prefixes: Sequence[str] | None = None):
        if len(loaders) < 1:
            raise ValueError("MultiTaskDataLoader needs at least one loader")
        self.loaders = list(loaders)
        self.prefixes = list(prefixes) if prefixes is not None else aux_prefixes(len(loaders) - 1)
        if len(self.prefixes) != len(self.loaders) - 1:
            raise ValueError(f"MultiTaskDataLoader: {len(self.prefixes)} prefixes for {len(self.loaders) - 1} "
                             f"auxiliary loaders")
        self.lengths = [epoch_batches(loader) for loader in self.loaders]  # whole epochs, before any placing
        self.epoch, self.start = 0, 0

    # the engine treats this object like a DataLoader: len(), iteration, set_epoch(), dataset
    @property
    def dataset(self):
        return self.loaders[0].dataset

    @property
    def datasets(self) -> list:
        return [loader.dataset for loader in self.loaders]

    def __len__(self) -> int:
        """Batches left in the epoch (all of them unless placed part-way into it)."""
        return self.lengths[0] - self.start

    def epoch_length(self) -> int:
        return self.lengths[0]

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= int(start_batch) <= self.lengths[0]:
            raise ValueError(f"MultiTaskDataLoader: start batch {start_batch} is outside the epoch of "
                             f"{self.lengths[0]} batches")
        self.epoch, self.start = int(epoch), int(start_batch)

    def _stride(self, aux_length: int) -> int:
        """Upper bound on the restarts one epoch can need (+1), so derived sampler epochs never collide."""
        return math.ceil(self.lengths[0] / max(aux_length, 1)) + 1

    def __iter__(self) -> Iterator[dict]:
        set_loader_epoch(self.loaders[0], self.epoch, self.start)
        streams = [_AuxStream(loader, self.epoch, self._stride(length), length, self.start)
                   for loader, length in zip(self.loaders[1:], self.lengths[1:], strict=True)]
        for batch in self.loaders[0]:
            merged = dict(batch)
            for prefix, stream in zip(self.prefixes, streams, strict=True):
                for key, value in stream.next().items():
                    merged[prefix + key] = value
            yield merged
