"""Per-file checks of the data check, and the pool that runs them: each check reads one file with the reader the
runs use and returns its problem lines (never raises), so thousands of them can run in worker processes.

A check is a `FileCheck(function, args, kwargs)` whose function is importable (module level), so that it can be
sent to a worker. `run_file_checks` runs a list of them in order, in this process or in `workers` processes, with
a progress bar on request, and returns every problem line.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from common.data.box_files import validate_box_file
from common.data.boxes import check_boxes
from common.data.image_io import open_image, path_exists


@dataclass(frozen=True)
class FileCheck:
    """One deferred check: `function(*args, **kwargs) -> list[str]` (problem lines)."""

    function: Callable[..., list[str]]
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> list[str]:
        try:
            return list(self.function(*self.args, **self.kwargs))
        except Exception as err:  # noqa: BLE001 - a check reports, it never stops the others
            return [f"check of {self.args[0] if self.args else '?'} failed: {type(err).__name__}: {err}"]


def _run(check: FileCheck) -> list[str]:
    return check()


def run_file_checks(checks: Sequence[FileCheck], workers: int = 1, progress: bool = False) -> list[str]:
    """Problem lines of every check, in the order of `checks`; `workers` > 1 runs them in that many processes."""
    bar = tqdm(total=len(checks), desc="data check", unit="file", disable=not progress)
    out: list[str] = []
    try:
        if workers <= 1 or len(checks) < 2:
            results = map(_run, checks)
            for lines in results:
                out += lines
                bar.update()
            return out
        chunk = max(1, min(64, len(checks) // (workers * 8)))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for lines in pool.map(_run, checks, chunksize=chunk):
                out += lines
                bar.update()
        return out
    finally:
        bar.close()


# ---- the checks ------------------------------------------------------------------------------------------------
def image_problems(path: str, key: str) -> list[str]:
    """The image exists and decodes completely (a truncated JPEG is found here, not hours into training)."""
    if not path_exists(path):
        return [f"image not found: {path} (config {key})"]
    try:
        open_image(path)
    except Exception as err:  # noqa: BLE001 - any decoder error is a problem to report
        return [f"image does not open: {path} ({err}) (config {key})"]
    return []


def box_file_problems(path: str, key: str, *, min_boxes: int = 1, num_classes: int | None = None,
                      require_features: bool = False, image_size: tuple[int, int] | None = None,
                      whole_image_feature: bool = False, fields: tuple[str, ...] | None = None) -> list[str]:
    """Every field (or the `fields` the run reads) decodes and is finite (`validate_box_file`), the boxes fit the
    stored image size and, when
    given, `image_size` (w, h) from the annotations; at least `min_boxes` boxes; `features` when
    `require_features`; with `num_classes`, `classes` [N, num_classes] (the MVRC target); with
    `whole_image_feature`, a file without boxes must hold `image_box_feature` (VQA's precomputed whole-image box)."""
    if not path_exists(path):
        return [f"box file not found: {path} (config {key})"]
    try:
        record = validate_box_file(path, require_features=require_features, fields=fields)
        if image_size is not None:
            check_boxes(record["boxes"], image_size[0], image_size[1], path)
    except Exception as err:  # noqa: BLE001 - BoxFileError, BoxError, OSError: all are problems to report
        return [f"box file does not read: {path} ({err}) (config {key})"]
    count = record["num_boxes"]
    if count < min_boxes:
        return [f"box file is empty (0 boxes): {path} (config {key})"]
    if count == 0 and whole_image_feature and "image_box_feature" not in record:
        return [f"box file {path}: 0 boxes and no 'image_box_feature', so the whole-image box has no feature "
                f"(config {key})"]
    if num_classes and count and "classes" not in record:
        return [f"box file has no 'classes' (the MVRC target): {path} (config {key})"]
    if num_classes and count and record["classes"].shape[1] != num_classes:
        return [f"box file {path}: 'classes' has {record['classes'].shape[1]} columns (detector classes, background "
                f"included) but NETWORK.VLBERT.visual_region_classes is {num_classes}; set the key to "
                f"{record['classes'].shape[1]} (data/extract_boxes.py prints it)"]
    return []


def text_file_problems(path: str, key: str) -> list[str]:
    """A text corpus file: exists, is UTF-8, has a non-empty line."""
    if not os.path.isfile(path):
        return [f"file not found: {path} (config {key})"]
    try:
        with open(path, encoding="utf-8") as handle:
            if not any(line.strip() for line in handle):
                return [f"{path}: no non-empty line (config {key})"]
    except (OSError, UnicodeDecodeError) as err:
        return [f"{path}: not readable UTF-8 text ({err}) (config {key})"]
    return []
