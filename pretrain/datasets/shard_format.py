"""The members of one pretraining sample in a webdataset shard, shared by `data/make_shards.py` (writer) and the
streaming datasets (reader).

Image-caption sample `<key>.*`: `jpg` (or `png`, `webp`, ...: the image bytes as stored, decoded by content),
`json` {"caption": [words], "index": int, "image_w": int, "image_h": int, "source": str}, `boxes.npy` [N, 4] and
`classes.npy` [N, C] float32 (detector boxes in original pixels, as in the box file), `features.npy` [N, D]
float32 for precomputed mode. Text sample: `txt` (one corpus line, UTF-8). Keys are 9-digit record numbers.
"""
from __future__ import annotations

import io
import json
import zlib

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tiff", "img")
PIL_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}
CONTENTS = ("images", "features", "both")  # what an image-caption shard carries besides caption and boxes


def sample_key(index: int) -> str:
    return f"{int(index):09d}"


def sample_index(key: str, meta: dict | None = None) -> int:
    """The sample's dataset index (masks are drawn from (seed, epoch, index)): `index` in its json, else the key
    when it is a number (make_shards, img2dataset), else a CRC32 of the key."""
    if meta is not None and isinstance(meta.get("index"), int):
        return int(meta["index"])
    return int(key) if key.isdigit() else zlib.crc32(key.encode("utf-8"))


def encode_array(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)  # = np.save
    return out.getvalue()


def decode_array(data: bytes, where: str, name: str) -> np.ndarray:
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{where}: member '{name}' is not a numpy array ({err})") from err
    return np.asarray(array, dtype=np.float32)


def member(sample: dict, name: str, where: str) -> bytes:
    """A member's bytes; a missing member is an error naming the sample and what it holds."""
    if name not in sample:
        present = sorted(k for k in sample if not k.startswith("__"))
        raise ValueError(f"{where}: no '{name}' member (it has {present})")
    return sample[name]


def image_member(sample: dict, where: str) -> bytes:
    for extension in IMAGE_EXTENSIONS:
        if extension in sample:
            return sample[extension]
    return member(sample, "jpg", where)


def decode_image(data: bytes, where: str) -> Image.Image:
    """Fully decoded RGB image (convert() forces the decode, so a truncated file fails here, naming the sample)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"{where}: the image does not decode ({err})") from err


def read_meta(sample: dict, where: str) -> dict:
    try:
        meta = json.loads(member(sample, "json", where))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{where}: member 'json' is not valid JSON ({err})") from err
    if not isinstance(meta, dict) or not isinstance(meta.get("caption"), list):
        raise ValueError(f"{where}: member 'json' needs a 'caption' list of words")
    return meta


def _rows(sample: dict, name: str, where: str, rows: int | None, width: int | None = None) -> np.ndarray:
    array = decode_array(member(sample, name, where), where, name)
    if array.ndim != 2 or (rows is not None and array.shape[0] != rows) or (width and array.shape[1] != width):
        expected = f"[{rows if rows is not None else 'N'}, {width or 'D'}]"
        raise ValueError(f"{where}: member '{name}' has shape {list(array.shape)}, expected {expected}")
    return array


def box_record(sample: dict, meta: dict, where: str, with_features: bool) -> dict:
    """The fields a box file would give (`boxes`, `classes`, `num_boxes`, `image_w`, `image_h`, `features`)."""
    boxes = _rows(sample, "boxes.npy", where, None, 4)
    record = {"boxes": boxes, "num_boxes": len(boxes), "image_w": meta.get("image_w"), "image_h": meta.get("image_h")}
    if "classes.npy" in sample:
        record["classes"] = _rows(sample, "classes.npy", where, len(boxes))
    if with_features:
        record["features"] = _rows(sample, "features.npy", where, len(boxes))
    return record


def caption_members(key: str, meta: dict, boxes: np.ndarray, classes: np.ndarray, image: bytes | None = None,
                    image_extension: str = "jpg", features: np.ndarray | None = None) -> dict:
    """The tar members of one image-caption sample (bytes, ready for `webdataset.TarWriter(encoder=False)`)."""
    members = {"__key__": key, "json": json.dumps(meta, ensure_ascii=False).encode("utf-8"),
               "boxes.npy": encode_array(np.asarray(boxes, np.float32).reshape(-1, 4)),
               "classes.npy": encode_array(classes)}
    if image is not None:
        members[image_extension] = image
    if features is not None:
        members["features.npy"] = encode_array(features)
    return members
