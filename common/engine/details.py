"""Per-item details of an evaluation, written beside its result file as `<result file stem>_details.jsonl`: what
`viz/browse.py` shows (the image and its boxes, the text, the top answers with their scores, the truth).

One JSON object per item, in dataset order (docs/EVALUATION.md lists the fields): `task`, `split`, `index`, `id`,
`image` (path), `image_size` [w, h], `boxes` [[x1, y1, x2, y2], ...] in original pixels, `whole_image_box` (box 0
is the whole image), `text`, `type`, `top` [[label, score], ...] best first, `prediction`, `truth` (null without
labels), `correct` (null without labels), `score` (a graded score where the task has one, else null), plus task
fields. The result file itself is untouched.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

from common.atomic_write import open_atomic

TOP_K = 5


def details_path(result_path: str) -> str:
    """`x/name_vqa2_val2014.json` -> `x/name_vqa2_val2014_details.jsonl`."""
    return os.path.splitext(result_path)[0] + "_details.jsonl"


def top_scores(scores: Sequence[float], labels: Sequence[str], k: int = TOP_K) -> list[list]:
    """The k best [label, score] pairs, best first (ties keep the earlier label first)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))[:k]
    return [[labels[i], round(float(scores[i]), 6)] for i in order]


def rounded_boxes(boxes: Iterable[Sequence[float]]) -> list[list[float]]:
    """Boxes as lists of floats with one decimal (a pixel is the finest a page draws)."""
    return [[round(float(v), 1) for v in box[:4]] for box in boxes]


def write_details(path: str, records: Iterable[dict]) -> str:
    """One JSON object per line, written atomically; returns the path."""
    with open_atomic(path, encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, separators=(",", ":")) + "\n")
    return path
