"""Several data loaders stepped together: each batch of the first (master) loader gets the next batch of every
auxiliary loader merged in under a key prefix (`aux_text`, `aux_mlm_labels`, ...).

The master loader defines the epoch and its length; an auxiliary loader that runs out restarts with a fresh
shuffle. Every loader's sampler gets `set_epoch` each epoch (and each auxiliary restart gets its own derived
epoch), and the iterators are created only when an epoch starts, so distributed shards and shuffles are right.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

log = logging.getLogger(__name__)


def aux_prefixes(count: int) -> list[str]:
    """Key prefixes of the auxiliary loaders: 'aux_', then 'aux2_', 'aux3_', ..."""
    return ["aux_" if k == 0 else f"aux{k + 1}_" for k in range(count)]


def set_loader_epoch(loader: Any, epoch: int) -> None:
    """The loader's own per-epoch reset (the engine's loaders reshuffle and reseed their workers), else `set_epoch`
    on its sampler / batch sampler; then `set_epoch` on its dataset (the mask seeds of the pretraining datasets)."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    owners = [loader] if callable(getattr(loader, "set_epoch", None)) else [
        getattr(loader, "sampler", None), batch_sampler, getattr(batch_sampler, "sampler", None)]
    owners.append(getattr(loader, "dataset", None))
    done: set[int] = set()
    for owner in owners:
        if owner is not None and id(owner) not in done and callable(getattr(owner, "set_epoch", None)):
            done.add(id(owner))
            owner.set_epoch(epoch)


class _AuxStream:
    """Endless batches of one auxiliary loader; restart k of epoch e uses the sampler epoch e * stride + k."""

    def __init__(self, loader, epoch: int, stride: int):
        self.loader, self.epoch, self.stride, self.restarts = loader, epoch, stride, 0
        self.iterator: Iterator | None = None

    def _start(self) -> None:
        set_loader_epoch(self.loader, self.epoch * self.stride + self.restarts)
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
        self.epoch = 0

    # the engine treats this object like a DataLoader: len(), iteration, set_epoch(), dataset
    @property
    def dataset(self):
        return self.loaders[0].dataset

    @property
    def datasets(self) -> list:
        return [loader.dataset for loader in self.loaders]

    def __len__(self) -> int:
        return len(self.loaders[0])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _stride(self, aux_loader) -> int:
        """Upper bound on the restarts one epoch can need (+1), so derived sampler epochs never collide."""
        return math.ceil(len(self.loaders[0]) / max(len(aux_loader), 1)) + 1

    def __iter__(self) -> Iterator[dict]:
        set_loader_epoch(self.loaders[0], self.epoch)
        streams = [_AuxStream(loader, self.epoch, self._stride(loader)) for loader in self.loaders[1:]]
        for batch in self.loaders[0]:
            merged = dict(batch)
            for prefix, stream in zip(self.prefixes, streams, strict=True):
                for key, value in stream.next().items():
                    merged[prefix + key] = value
            yield merged
