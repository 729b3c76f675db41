"""Deterministic file writing for the toy world: sorted-key JSON, JSON lines, JPEG, stored zips, links."""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Iterable
from typing import Any

from PIL import Image

from common.atomic_write import open_atomic

JPEG_QUALITY = 92
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _ensure_parent(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def write_json(path: str, obj: Any) -> None:
    """JSON with sorted keys and no spaces: identical bytes for identical content."""
    with open_atomic(path) as f:
        json.dump(obj, f, sort_keys=True, separators=(",", ":"))


def write_jsonl(path: str, rows: Iterable[dict]) -> None:
    """One JSON object per line (the `.json`/`.jsonl` files of CC and VCR)."""
    with open_atomic(path) as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True, separators=(",", ":")) + "\n")


def write_text(path: str, lines: Iterable[str]) -> None:
    with open_atomic(path) as f:
        f.writelines(line + "\n" for line in lines)


def write_jpeg(path: str, image: Image.Image) -> None:
    """Baseline RGB JPEG without metadata (deterministic for a given libjpeg)."""
    with open_atomic(path, "wb") as f:
        image.convert("RGB").save(f, format="JPEG", quality=JPEG_QUALITY)


def link_or_copy(src: str, dst: str) -> None:
    """Hard link (no extra space) where the file system allows it, else a copy."""
    _ensure_parent(dst)
    if os.path.exists(dst):
        os.remove(dst)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def zip_folder(folder: str, archive: str) -> None:
    """Stored (uncompressed) zip of the files directly inside `folder`, member names = bare file names,
    as `zip -0` run from inside the folder makes them; fixed timestamps keep the bytes reproducible."""
    _ensure_parent(archive)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(os.listdir(folder)):
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            with open(os.path.join(folder, name), "rb") as f:
                zf.writestr(info, f.read(), compress_type=zipfile.ZIP_STORED)
