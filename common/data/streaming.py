"""Streaming batches from webdataset shards: one rank's share, split over its DataLoader workers, shuffled through
a seeded buffer, with the same number of full batches on every rank; bad samples are skipped, named and counted.

Determinism: the shards a worker reads and its shuffle depend on (seed, epoch, rank, worker, number of workers)
only, and each item's random draws on (seed, epoch, sample index) (the map-style rule), so a run repeats itself for
the same world size and NUM_WORKERS_PER_GPU. DDP needs equal step counts on every rank: training streams are
endless (resampled shards, or shard permutations one after another), so each rank stops after exactly
ceil(SAMPLES_PER_EPOCH / (world x batch)) batches, whatever it skipped on the way. Evaluation reads every shard
once and gives rank r the samples at positions p with p % world == r.
"""
from __future__ import annotations

import itertools
import logging
import math
import random
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.filters import shuffle as wds_shuffle

from common.data.collate import collate_dicts
from common.data.item_seeding import build_seeded
from common.data.masking import SharedEpoch
from common.data.shards import ShardError, iter_shard, missing_shards, sample_counts, shard_holding

log = logging.getLogger(__name__)
MIN_JUDGED_SAMPLES = 1000  # the bad-sample share is judged once this many (or a rank's epoch) have been read


class BadDataError(RuntimeError):
    """More than DATASET.MAX_BAD_SAMPLE_FRACTION of the samples read could not be used."""


class SampleSource(Protocol):
    """How one dataset turns shard samples into items (pretrain/datasets/streaming.py)."""

    PAD_RULES: dict

    def prepare_shard(self, samples: Iterator[dict]) -> Iterator[dict]:
        """Per-shard step before the shuffle (e.g. joining following text lines); keeps `__position__`."""

    def build(self, sample: dict, epoch: int) -> dict:
        """The item of one sample; raises on a bad sample."""


class SampleCounter:
    """Samples read and bad per DataLoader worker, in shared memory: each worker adds to its own row; the main
    process and the workers read the sums (persistent workers included)."""

    def __init__(self, slots: int):
        self._counts = torch.zeros((max(int(slots), 1), 2), dtype=torch.long).share_memory_()

    def add(self, slot: int, read: int = 0, bad: int = 0) -> None:
        self._counts[slot, 0] += read
        self._counts[slot, 1] += bad

    def totals(self) -> tuple[int, int]:
        read, bad = self._counts.sum(0).tolist()
        return int(read), int(bad)


class ShardSamples:
    """The shards of one split and their source: what a dataset section with DATASET.FORMAT wds builds.

    len() is the samples of one epoch over all ranks: `samples_per_epoch` (training; 0 = the shards' count) or
    every sample of the shards (evaluation). Iterating it directly gives every item in shard order (one process).
    """

    def __init__(self, shards: list[str], source: SampleSource, train: bool, samples_per_epoch: int = 0,
                 shuffle_buffer: int = 1000, resample: bool = True, max_bad_fraction: float = 0.01, seed: int = 0,
                 name: str = "shards"):
        missing = missing_shards(shards)
        if missing:
            raise ShardError(f"{name}: {len(missing)} of {len(shards)} shards not found: "
                             f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"DATASET.MAX_BAD_SAMPLE_FRACTION must be within [0, 1], found {max_bad_fraction}")
        self.shards, self.source, self.train, self.name = list(shards), source, bool(train), name
        self.counts = sample_counts(self.shards)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(int).tolist()
        self.samples_per_epoch = int(samples_per_epoch) if train and samples_per_epoch > 0 else sum(self.counts)
        self.shuffle_buffer, self.resample = int(shuffle_buffer), bool(resample)
        self.max_bad_fraction, self.seed = float(max_bad_fraction), max(int(seed), 0)
        self._epoch = SharedEpoch()

    @property
    def PAD_RULES(self) -> dict:  # noqa: N802 - the attribute name every dataset declares
        return self.source.PAD_RULES

    def __len__(self) -> int:
        return self.samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        self._epoch.set(epoch)

    @property
    def epoch(self) -> int:
        return self._epoch.get()

    def describe(self, index: int) -> str:
        """The item in words, for messages (the non-finite guard): its sample index and the shard whose records'
        key range holds it (read from the shard records only when asked)."""
        found = shard_holding(self.shards, int(index))
        where = f"shard {found[0]} (keys {found[1]}..{found[2]})" if found else f"one of {len(self.shards)} shards"
        return f"{self.name}: sample index {index}, {where}"

    def __iter__(self) -> Iterator[dict]:
        reader = ShardBatches(self, batch_size=1)
        return reader.items(range(len(self.shards)), reader.counter, 0, None)


class ShardBatches(IterableDataset):
    """Collated batches of `samples` for one rank: DataLoader(ShardBatches(...), batch_size=None). len() is the
    number of batches this rank yields per epoch (exact for training; an upper bound when evaluation skips)."""

    def __init__(self, samples: ShardSamples, batch_size: int, world_size: int = 1, rank: int = 0,
                 num_workers: int = 0, seed_offset: int = 0):
        if batch_size is None or batch_size < 1:
            raise ValueError(f"{samples.name}: batch size must be positive, found {batch_size}")
        self.samples, self.batch_size, self.name = samples, int(batch_size), samples.name
        self.world_size, self.rank, self.num_workers = int(world_size), int(rank), int(num_workers)
        self.seed = samples.seed + int(seed_offset)
        self.counter = SampleCounter(self.num_workers)
        self._start = SharedEpoch()  # the batch this rank's next training pass starts at (a mid-epoch resume)
        if samples.train and len(self) < 1:
            raise ValueError(f"{samples.name}: no training batch ({samples.samples_per_epoch} samples per epoch for "
                             f"{world_size} ranks x batch {batch_size})")

    @property
    def PAD_RULES(self) -> dict:  # noqa: N802
        return self.samples.PAD_RULES

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """The epoch, and the batch of it the next training pass starts at (0: the whole epoch; a resumed run
        passes the batches it already trained). The batches then yielded are the whole epoch's from there on."""
        if start_batch and (not self.samples.train or not 0 <= start_batch <= len(self)):
            raise ValueError(f"{self.samples.name}: cannot start at batch {start_batch} of a "
                             f"{'training' if self.samples.train else 'evaluation'} epoch of {len(self)} batches")
        self.samples.set_epoch(epoch)
        self._start.set(int(start_batch))

    def describe(self, index: int) -> str:
        return self.samples.describe(index)

    def bad_sample_counts(self) -> tuple[int, int]:
        """(samples read, samples skipped as bad) by this rank's workers since the loader was built."""
        return self.counter.totals()

    # ---- layout ------------------------------------------------------------------------------------------------
    def _workers(self) -> int:
        return max(self.num_workers, 1)

    def _eval_shards(self, worker: int) -> list[int]:
        """Shards a worker reads for evaluation: every rank reads every shard (its workers taking turns) and keeps
        its positions, so that ranks get equal shares even from a few shards."""
        return list(range(worker, len(self.samples.shards), self._workers()))

    def _train_batches(self, worker: int) -> int:
        total = math.ceil(self.samples.samples_per_epoch / (self.world_size * self.batch_size))
        return total // self._workers() + int(worker < total % self._workers())

    def _mine(self, start: int, stop: int) -> int:
        """Positions in [start, stop) that belong to this rank at evaluation."""
        return len(range(start + (self.rank - start) % self.world_size, stop, self.world_size))

    def __len__(self) -> int:
        if self.samples.train:
            return sum(self._train_batches(w) for w in range(self._workers()))
        offsets, counts = self.samples.offsets, self.samples.counts
        return sum(math.ceil(sum(self._mine(offsets[i], offsets[i] + counts[i]) for i in self._eval_shards(w))
                             / self.batch_size) for w in range(self._workers()))

    def _train_shards(self, epoch: int, worker: int) -> Iterator[int]:
        """Endless shard indices of one slot: uniform draws with replacement, or permutations one after another
        with the slots taking turns (each shard read once per permutation when there are more shards than slots)."""
        count, workers = len(self.samples.shards), self._workers()
        if self.samples.resample:
            rng = np.random.default_rng([self.seed, epoch, self.rank, worker, workers, 1])
            while True:
                yield int(rng.integers(count))
        slots, position = self.world_size * workers, self.rank * workers + worker
        while True:
            cycle = position // count
            yield int(np.random.default_rng([self.seed, epoch, cycle, 2]).permutation(count)[position % count])
            position += slots

    # ---- reading -----------------------------------------------------------------------------------------------
    def _judge(self, counter: SampleCounter, error: str) -> None:
        read, bad = counter.totals()
        per_rank = max(len(self) * self.batch_size, 1)
        if bad > self.samples.max_bad_fraction * read and read >= min(MIN_JUDGED_SAMPLES, per_rank):
            raise BadDataError(f"{self.samples.name}: {bad} of {read} samples read on rank {self.rank} are bad, "
                               f"more than DATASET.MAX_BAD_SAMPLE_FRACTION={self.samples.max_bad_fraction}; "
                               f"last: {error}")

    def _shard(self, shard_id: int, counter: SampleCounter, slot: int, rank_share: bool) -> Iterator[dict]:
        """One shard's samples tagged with their position in the split; a shard that is missing or cut counts its
        lost samples (this rank's share of them with `rank_share`) as bad."""
        shard, expected, read = self.samples.shards[shard_id], self.samples.counts[shard_id], 0
        offset = self.samples.offsets[shard_id]
        try:
            for sample in iter_shard(shard, expected):
                sample["__position__"] = offset + read
                read += 1
                yield sample
        except ShardError as err:
            lost = max(self._mine(offset + read, offset + expected) if rank_share else expected - read, 1)
            log.warning("%s; %d sample(s) of it skipped", err, lost)
            counter.add(slot, read=lost, bad=lost)
            self._judge(counter, str(err))

    def _prepared(self, shard_ids: Iterable[int], counter: SampleCounter, slot: int,
                  rank_share: bool) -> Iterator[dict]:
        """Raw samples of the shards in turn, each shard through `source.prepare_shard`; with `rank_share`, only
        the samples whose position belongs to this rank."""
        for shard_id in shard_ids:
            for sample in self.samples.source.prepare_shard(self._shard(shard_id, counter, slot, rank_share)):
                if not rank_share or sample["__position__"] % self.world_size == self.rank:
                    yield sample

    def items(self, shard_ids: Iterable[int], counter: SampleCounter, slot: int, shuffle_seed: int | None,
              rank_share: bool = False) -> Iterator[dict]:
        """Built items of the shards `shard_ids`, shuffled through the buffer when `shuffle_seed` is given."""
        source, epoch, error = self.samples.source, self.samples.epoch, None
        stream = self._prepared(shard_ids, counter, slot, rank_share)
        if shuffle_seed is not None and self.samples.shuffle_buffer > 1:
            buffer = self.samples.shuffle_buffer
            stream = wds_shuffle(buffer, min(100, buffer), rng=random.Random(shuffle_seed))(stream)
        for sample in stream:
            try:
                # the global generators seeded per sample (random flips), as the map-style datasets' items
                item = build_seeded(self.seed, epoch, sample["__position__"], lambda s=sample: source.build(s, epoch))
            except Exception as err:  # noqa: BLE001 - a bad sample must not stop a long run; counted and judged
                where = f"shard {sample.get('__shard__')} key {sample.get('__key__')!r}"
                error = f"{type(err).__name__}: {err}" if where in str(err) else f"{where}: {type(err).__name__}: {err}"
                counter.add(slot, read=1, bad=1)
                read, bad = counter.totals()
                log.warning("bad sample skipped (%d of %d read so far): %s", bad, read, error)
                self._judge(counter, error)
                continue
            counter.add(slot, read=1)
            if error is not None:  # judged on every read after a bad one: the share may pass the limit later
                self._judge(counter, error)
            yield item

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None and info.num_workers != self._workers():
            raise RuntimeError(f"ShardBatches was set up for {self.num_workers} workers, runs in {info.num_workers}")
        epoch = self.samples.epoch
        if self.samples.train:
            yield from self._train_pass(epoch, worker)
        else:
            yield from self._batches(self.items(self._eval_shards(worker), self.counter, worker, None, True), None)

    def _train_pass(self, epoch: int, worker: int) -> Iterator[dict]:
        """The training batches of one DataLoader worker. Slot s of the epoch gives batches s, s + W, s + 2W, ...
        (the DataLoader takes its workers in turn, from worker 0). Started at batch k (a resume), worker w plays slot
        (w + k) % W, whose batch comes next, and drops the batches its slot gave before k: they are built again, not
        yielded (the shuffle buffer's state is made of the samples that went through it)."""
        workers, start = self._workers(), self._start.get()
        slot = (worker + start) % workers
        done = start // workers + int(slot < start % workers)
        shuffle_seed = int(np.random.default_rng([self.seed, epoch, self.rank, slot, 3]).integers(2**63))
        items = self.items(self._train_shards(epoch, slot), self.counter, worker, shuffle_seed)
        next(itertools.islice(items, done * self.batch_size, done * self.batch_size), None)  # consumes them
        yield from self._batches(items, self._train_batches(slot) - done)

    def _batches(self, items: Iterator[dict], quota: int | None) -> Iterator[dict]:
        done, batch = 0, []
        while quota is None or done < quota:
            item = next(items, None)
            if item is None:
                break
            batch.append(item)
            if len(batch) == self.batch_size:
                yield collate_dicts(batch, self.PAD_RULES)
                done, batch = done + 1, []
        if batch and quota is None:
            yield collate_dicts(batch, self.PAD_RULES)


def make_shard_loader(samples: ShardSamples, cfg: Any, split: str, env: Any, batch_size: int,
                      seed_offset: int = 0) -> DataLoader:
    """The DataLoader of a shard dataset for this rank (the streaming counterpart of the engine's make_loader)."""
    workers = int(cfg.NUM_WORKERS_PER_GPU)
    batches = ShardBatches(samples, batch_size, getattr(env, "world_size", 1), getattr(env, "rank", 0), workers,
                           seed_offset)
    # its own generator: starting an iterator then draws no number from the global one (which a resumed run restores
    # part-way into an epoch, where the uninterrupted run created no iterator); its draws do not reach the items
    return DataLoader(batches, batch_size=None, num_workers=workers,
                      generator=torch.Generator().manual_seed(batches.seed),
                      pin_memory=bool(cfg.TRAIN.get("PIN_MEMORY", True)) and torch.cuda.is_available(),
                      persistent_workers=bool(cfg.TRAIN.get("PERSISTENT_WORKERS", True)) and workers > 0
                      and split == "train")
