"""Read images, bytes and JSON from a folder path or from inside a zip archive (`archive.zip@/inner/path`).

One ZipFile handle is cached per archive per process (keyed by pid, so DataLoader workers open their own after
fork). Every error names the file, or the archive and the entry. `open_image_or_blank` is the one place where
DATASET.SKIP_UNREADABLE_IMAGES is applied, for every task.
"""
from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from typing import Any

from PIL import Image

from common.atomic_write import write_json_atomic  # noqa: F401 - kept importable from here

log = logging.getLogger(__name__)

ZIP_MARKER = ".zip@"
_ARCHIVES: dict[tuple[int, str], zipfile.ZipFile] = {}


class ImageReadError(OSError):
    """An image file that is missing, truncated or not decodable; the message names the file."""


def split_zip_path(path: str) -> tuple[str, str] | None:
    """'a/b.zip@/c/d.jpg' -> ('a/b.zip', 'c/d.jpg'); a plain path -> None."""
    pos = path.find(ZIP_MARKER)
    if pos < 0:
        return None
    archive = path[: pos + len(".zip")]
    return archive, path[pos + len(ZIP_MARKER):].lstrip("/")


def open_archive(archive: str) -> zipfile.ZipFile:
    """The cached ZipFile for `archive` in this process; a handle inherited through fork is never reused."""
    pid = os.getpid()
    key = (pid, os.path.abspath(archive))
    handle = _ARCHIVES.get(key)
    if handle is None:
        for stale in [k for k in _ARCHIVES if k[0] != pid]:
            del _ARCHIVES[stale]  # the parent's handles: drop the reference, never close the shared descriptor
        if not os.path.isfile(archive):
            raise FileNotFoundError(f"zip archive not found: {archive}")
        try:
            handle = zipfile.ZipFile(archive, "r")
        except zipfile.BadZipFile as err:
            raise OSError(f"{archive}: not a readable zip archive ({err})") from err
        _ARCHIVES[key] = handle
    return handle


def read_bytes(path: str) -> bytes:
    """Bytes of a plain file or a zip entry; missing files/entries raise FileNotFoundError naming them."""
    inside = split_zip_path(path)
    if inside is None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"file not found: {path}")
        with open(path, "rb") as f:
            return f.read()
    archive, entry = inside
    handle = open_archive(archive)
    try:
        return handle.read(entry)
    except KeyError:
        raise FileNotFoundError(f"zip archive {archive} has no entry '{entry}'") from None


def path_exists(path: str) -> bool:
    inside = split_zip_path(path)
    if inside is None:
        return os.path.isfile(path)
    archive, entry = inside
    if not os.path.isfile(archive):
        return False
    try:
        open_archive(archive).getinfo(entry)
    except KeyError:
        return False
    return True


def read_json(path: str) -> Any:
    """Parse a JSON file (plain or zip entry); invalid JSON raises ValueError naming the file."""
    data = read_bytes(path)
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def open_image(path: str, none_on_error: bool = False) -> Image.Image | None:
    """Decode an image fully and convert it to RGB.

    A missing, truncated or undecodable file raises ImageReadError naming it; with `none_on_error` the error is
    logged and None returned, so the caller can skip the sample and count it.
    """
    try:
        data = read_bytes(path)
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")  # convert() forces the full decode, so truncation surfaces here
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        error = ImageReadError(f"cannot read image {path}: {err}")
        if none_on_error:
            log.warning("%s", error)
            return None
        raise error from err


def open_image_or_blank(path: str, size: tuple[int, int] | None, skip_unreadable: bool) -> Image.Image:
    """`open_image`, or with `skip_unreadable` (DATASET.SKIP_UNREADABLE_IMAGES) a black RGB image of `size` (w, h)
    in place of a missing or undecodable file, with a warning naming it.

    The size must come from the annotations (not the file), so boxes and im_info stay those of the real image;
    without it (None) the error is raised as without the flag.
    """
    try:
        return open_image(path)
    except (ImageReadError, FileNotFoundError) as err:
        if not skip_unreadable or size is None:
            raise
        log.warning("%s; using a black %dx%d image instead (DATASET.SKIP_UNREADABLE_IMAGES)", err, size[0], size[1])
        return Image.new("RGB", (int(size[0]), int(size[1])))


def image_size(path: str) -> tuple[int, int]:
    """(width, height) from the image header without decoding the pixels."""
    try:
        with Image.open(io.BytesIO(read_bytes(path))) as img:
            return img.size
    except (OSError, ValueError) as err:
        raise ImageReadError(f"cannot read image header {path}: {err}") from err
