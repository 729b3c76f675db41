"""Read and write bottom-up-attention box files: one JSON per image with base64 float32 arrays.

Schema (jackroos/bottom-up-attention `generate_tsv_v2.py`): `image_id`, `image_w`, `image_h`, `num_boxes`,
`boxes` [N, 4] (x1, y1, x2, y2, original pixels), `features` [N, 2048], `classes` [N, 1601], `attrs` [N, 401]
and an optional `image_box_feature` [1, 2048]; arrays are little-endian float32, standard base64.
Every decoded array must be finite (a NaN/inf value is an error naming file and field); `validate_box_file` also
checks the box geometry against the stored image size, for the data checks.
"""
from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any

import numpy as np

from common.atomic_write import write_json_atomic
from common.data.boxes import BoxError, check_boxes
from common.data.image_io import read_json

PER_BOX_FIELDS = ("boxes", "features", "classes", "attrs")
INT_FIELDS = ("image_w", "image_h", "num_boxes")


class BoxFileError(ValueError):
    """A box file that is not valid JSON/base64 or whose arrays disagree; the message names file and field."""


def encode_array(array: np.ndarray) -> str:
    """float32 little-endian bytes -> base64 text (standard alphabet, no line breaks)."""
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def decode_array(text: str, path: str = "<memory>", field: str = "?") -> np.ndarray:
    """base64 text -> flat float32 array; errors name the file and field (NaN and inf values are errors)."""
    if not isinstance(text, str):
        raise BoxFileError(f"{path}: field '{field}' should be a base64 string, found {type(text).__name__}")
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise BoxFileError(f"{path}: field '{field}' is not valid base64 ({err})") from err
    if len(raw) % 4:
        raise BoxFileError(f"{path}: field '{field}' holds {len(raw)} bytes, not a whole number of float32 values")
    values = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    finite = np.isfinite(values)
    if not finite.all():
        position = int(np.flatnonzero(~finite)[0])
        raise BoxFileError(f"{path}: field '{field}' holds {int((~finite).sum())} NaN/inf value(s), the first at "
                           f"position {position} ({values[position]})")
    return values


def _rows(flat: np.ndarray, num_boxes: int, path: str, field: str, width: int | None) -> np.ndarray:
    if num_boxes == 0:
        if flat.size:
            raise BoxFileError(f"{path}: field '{field}' has {flat.size} values but num_boxes is 0")
        return flat.reshape(0, width or 0)
    if flat.size % num_boxes or (width is not None and flat.size != num_boxes * width):
        expected = f"{num_boxes} x {width}" if width else f"a multiple of num_boxes={num_boxes}"
        raise BoxFileError(f"{path}: field '{field}' has {flat.size} values, expected {expected} "
                           f"(array length disagrees with num_boxes / boxes)")
    return flat.reshape(num_boxes, -1)


def read_box_file(path: str, fields: Iterable[str] | None = None, feature_dim: int | None = 2048) -> dict[str, Any]:
    """Decode one box file (plain path or `archive.zip@/entry.json`).

    Returns numpy float32 arrays `boxes` [N, 4] and, when present (and in `fields`, if given), `features`
    [N, feature_dim], `classes` [N, C], `attrs` [N, A], `image_box_feature` [feature_dim]; plus the ints
    `num_boxes`, `image_w`, `image_h`, `image_id` when present. N comes from `num_boxes` (or from `boxes` if
    absent) and every array must agree with it.
    """
    try:
        record = read_json(path)
    except ValueError as err:
        raise BoxFileError(str(err)) from err
    if not isinstance(record, dict) or "boxes" not in record:
        raise BoxFileError(f"{path}: expected a JSON object with a 'boxes' field")
    wanted = set(PER_BOX_FIELDS + ("image_box_feature",)) if fields is None else set(fields) | {"boxes"}
    out: dict[str, Any] = {}
    for key in INT_FIELDS + ("image_id",):
        if key in record:
            try:
                out[key] = int(record[key])
            except (TypeError, ValueError):
                if key != "image_id":
                    raise BoxFileError(f"{path}: field '{key}' should be an integer, found {record[key]!r}") from None
                out[key] = record[key]
    boxes_flat = decode_array(record["boxes"], path, "boxes")
    if "num_boxes" not in out:
        out["num_boxes"] = boxes_flat.size // 4
    num_boxes = out["num_boxes"]
    out["boxes"] = _rows(boxes_flat, num_boxes, path, "boxes", 4)
    for field in PER_BOX_FIELDS[1:]:
        if field in record and field in wanted:
            width = feature_dim if field == "features" else None
            out[field] = _rows(decode_array(record[field], path, field), num_boxes, path, field, width)
    if "image_box_feature" in record and "image_box_feature" in wanted:
        feat = decode_array(record["image_box_feature"], path, "image_box_feature")
        expected = feature_dim or (out["features"].shape[1] if "features" in out else feat.size)
        if feat.size != expected:
            raise BoxFileError(f"{path}: field 'image_box_feature' has {feat.size} values, expected {expected}")
        out["image_box_feature"] = feat
    return out


def write_box_file(path: str, boxes: np.ndarray, features: np.ndarray | None = None,
                   classes: np.ndarray | None = None, attrs: np.ndarray | None = None,
                   image_box_feature: np.ndarray | None = None, image_w: int | None = None,
                   image_h: int | None = None, image_id: Any = None) -> None:
    """Write one box file in the bottom-up-attention schema; per-box arrays must all have N rows."""
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{path}: boxes must be [N, 4], found {boxes.shape}")
    record: dict[str, Any] = {}
    if image_id is not None:
        record["image_id"] = image_id
    if image_w is not None:
        record["image_w"], record["image_h"] = int(image_w), int(image_h)
    record["num_boxes"] = int(boxes.shape[0])
    record["boxes"] = encode_array(boxes)
    for name, array in (("features", features), ("classes", classes), ("attrs", attrs)):
        if array is None:
            continue
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 2 or array.shape[0] != boxes.shape[0]:
            raise ValueError(f"{path}: {name} must be [{boxes.shape[0]}, D], found {array.shape}")
        record[name] = encode_array(array)
    if image_box_feature is not None:
        record["image_box_feature"] = encode_array(np.asarray(image_box_feature, dtype=np.float32).reshape(1, -1))
    write_json_atomic(path, record)


def whole_image_feature(record: dict[str, Any], path: str) -> np.ndarray:
    """Feature [D] of the whole-image box: `image_box_feature` when the file has it, else the mean of the box
    features. A file with no boxes and no `image_box_feature` has no such feature: BoxFileError naming it."""
    if "image_box_feature" in record:
        return record["image_box_feature"].reshape(-1).astype(np.float32)
    features = record.get("features")
    if features is None or len(features) == 0:
        raise BoxFileError(f"{path}: {record.get('num_boxes', 0)} boxes and no 'image_box_feature': the whole-image "
                           f"feature would be the mean of an empty set of box features")
    return features.mean(0).astype(np.float32)


def validate_box_file(path: str, feature_dim: int | None = None, require_features: bool = False,
                      min_boxes: int = 0, fields: Iterable[str] | None = None) -> dict[str, Any]:
    """Read every field of a box file (or only `fields`, e.g. those a dataset reads) and check it strictly; returns
    the record or raises BoxFileError.

    Beyond `read_box_file` (JSON, base64, lengths, finite values): at least `min_boxes` boxes, `features` present
    when `require_features`, and each box valid for the stored `image_w` x `image_h` (common.data.boxes.check_boxes:
    no inverted box, none wholly outside the image).
    """
    record = read_box_file(path, fields=fields, feature_dim=feature_dim)
    if record["num_boxes"] < min_boxes:
        raise BoxFileError(f"{path}: {record['num_boxes']} boxes, at least {min_boxes} needed")
    if require_features and "features" not in record:
        raise BoxFileError(f"{path}: no 'features' field (needed by NETWORK.IMAGE_FEAT_PRECOMPUTED)")
    if "image_w" in record and "image_h" in record:
        try:
            check_boxes(record["boxes"], record["image_w"], record["image_h"], path)
        except BoxError as err:
            raise BoxFileError(str(err)) from err
    return record
