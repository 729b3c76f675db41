"""Reading Google's Conceptual Captions TSV files (`caption<TAB>url`, one image per line, line n -> `{n:08d}`)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple


class TsvRow(NamedTuple):
    number: int  # 0-based line number: the image's file stem is f"{number:08d}"
    caption: str
    url: str

    @property
    def stem(self) -> str:
        return f"{self.number:08d}"


def read_tsv(path: str) -> Iterator[TsvRow]:
    """Rows of a GCC TSV; a line without exactly one tab raises ValueError naming file and line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Conceptual Captions TSV not found: {path}")
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            line = line.rstrip("\n").rstrip("\r")
            parts = line.split("\t")
            if len(parts) != 2:
                raise ValueError(f"{path}:{number + 1}: expected 'caption<TAB>url', found {len(parts)} fields")
            yield TsvRow(number, parts[0].strip(), parts[1].strip())
