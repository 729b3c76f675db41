"""Per-item random state for every dataset the engine loads: before item i of epoch e is built, Python's `random`,
numpy's global generator and torch's CPU generator are seeded from (seed, epoch, i).

An augmentation (the flip of `VisualTransform`, any draw a task makes in `__getitem__`) then gives the same result
for the same item whatever worker builds it, whatever came before it in that worker, and whether the workers are
persistent or not; that is what lets a run resumed in the middle of an epoch repeat the uninterrupted run bit for
bit. Datasets that already draw from their own `item_rng(seed, epoch, index)` (common/data/masking.py) are unchanged.
"""
from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from common.data.masking import SharedEpoch

T = TypeVar("T")
ITEM_STREAM = 7  # keeps these seeds apart from the masking streams of `item_rng` for the same (seed, epoch, index)


def item_seeds(seed: int, epoch: int, index: int) -> bytes:
    """16 bytes that depend only on (seed, epoch, index): a hash, cheap enough to run for every item."""
    key = struct.pack("<4q", max(int(seed), 0), int(epoch), int(index), ITEM_STREAM)
    return hashlib.blake2b(key, digest_size=16).digest()


def seed_global_generators(seeds: bytes) -> None:
    """Seed `random`, numpy's global generator and torch's CPU generator (CUDA generators are left alone)."""
    random.seed(int.from_bytes(seeds[:8], "little"))
    np.random.seed(int.from_bytes(seeds[8:12], "little"))  # numpy's legacy seed takes 32 bits
    torch.default_generator.manual_seed(int.from_bytes(seeds[8:], "little"))


class ItemSeededDataset(Dataset):
    """`dataset` with the global generators seeded per item (see the module docstring); attributes are the wrapped
    dataset's, so `loader.dataset.PAD_RULES`, `.aspect_groups()`, `.set_epoch()` work unchanged.

    In a DataLoader worker the seeding simply replaces the worker's state. In the main process (no workers) the
    generators are restored after the item, so data loading never shifts the training process's own streams
    (dropout).
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self._epoch = dataset, int(seed), SharedEpoch()

    def __getattr__(self, name: str) -> Any:
        # not set yet (unpickling): never recurse; and no dunder (a forwarded `__getitems__` would let the
        # DataLoader fetch a whole batch past the per-item seeding)
        if name in ("dataset", "seed", "_epoch") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the item seeds (shared memory: persistent workers see it), and the dataset's own."""
        self._epoch.set(epoch)
        if callable(getattr(self.dataset, "set_epoch", None)):
            self.dataset.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self._epoch.get()

    def __getitem__(self, index: int) -> Any:
        return build_seeded(self.seed, self._epoch.get(), int(index), lambda: self.dataset[index])


def build_seeded(seed: int, epoch: int, index: int, build: Callable[[], T]) -> T:
    """`build()` with the global generators seeded from (seed, epoch, index): for good in a DataLoader worker; in the
    main process restored afterwards, so that building an item never moves the training process's own streams."""
    words = item_seeds(seed, epoch, index)
    if get_worker_info() is not None:
        seed_global_generators(words)
        return build()
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        seed_global_generators(words)
        return build()
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])
