"""Large per-record indexes as flat numpy arrays (UTF-8 bytes + offsets) instead of lists of Python objects, so that
DataLoader workers reading them never touch a reference count and their resident memory stays flat.

A forked worker shares its parent's pages until it writes to them. Every read of a Python object writes its
reference count, and the cyclic garbage collector walks every list and dict, so a worker that reads a list of
3.3 M dicts ends up with its own copy of most of it (pytorch/pytorch#13246). Two numpy buffers are two objects.
"""
from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator

import numpy as np


class PackedStringsBuilder:
    """Append strings one at a time (no list of them is kept), then `finish()` into a PackedStrings."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._ends = array("q")

    def append(self, text: str) -> None:
        self._data += text.encode("utf-8")
        self._ends.append(len(self._data))

    def __len__(self) -> int:
        return len(self._ends)

    def finish(self) -> PackedStrings:
        offsets = np.zeros(len(self._ends) + 1, dtype=np.int64)
        offsets[1:] = np.frombuffer(self._ends, dtype=np.int64)
        data = np.frombuffer(bytes(self._data), dtype=np.uint8)
        self._data, self._ends = bytearray(), array("q")
        return PackedStrings(data, offsets)


class PackedStrings:
    """An immutable sequence of strings stored as `data` [total bytes] uint8 and `offsets` [N + 1] int64;
    item i is `data[offsets[i]:offsets[i + 1]]` decoded as UTF-8."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray):
        if offsets.ndim != 1 or len(offsets) < 1 or int(offsets[-1]) != len(data):
            raise ValueError(f"PackedStrings: offsets [{len(offsets)}] do not end at the data size {len(data)}")
        self.data, self.offsets = data, offsets

    @classmethod
    def from_strings(cls, strings: Iterable[str]) -> PackedStrings:
        builder = PackedStringsBuilder()
        for text in strings:
            builder.append(text)
        return builder.finish()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> str:
        count = len(self)
        if not -count <= index < count:
            raise IndexError(f"PackedStrings index {index} out of range for {count} strings")
        index %= count
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        return self.data[start:end].tobytes().decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + self.offsets.nbytes)
