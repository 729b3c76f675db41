"""PackedStrings against the plain list it replaces: same strings (empty, non-ASCII, long), same indexing rules,
held in two numpy arrays whatever the count."""
from __future__ import annotations

import numpy as np
import pytest

from common.data.packed_strings import PackedStrings, PackedStringsBuilder


def test_round_trip_equals_the_list():
    strings = ["", "a", "größe", "日本語 テキスト", "x" * 10_000, "", "line\nbreak", "\x1f\x00"]
    packed = PackedStrings.from_strings(strings)
    assert len(packed) == len(strings) and list(packed) == strings
    assert [packed[i] for i in range(-len(strings), 0)] == strings
    for bad in (len(strings), -len(strings) - 1):
        with pytest.raises(IndexError):
            packed[bad]
    assert packed.data.dtype == np.uint8 and packed.offsets.dtype == np.int64


def test_builder_is_incremental_and_empty_is_allowed():
    builder = PackedStringsBuilder()
    assert list(builder.finish()) == []
    for i in range(1000):
        builder.append(str(i))
    packed = builder.finish()
    assert packed[999] == "999" and packed.nbytes == packed.data.nbytes + 1001 * 8
    with pytest.raises(ValueError, match="offsets"):
        PackedStrings(np.zeros(3, np.uint8), np.array([0, 2], np.int64))
