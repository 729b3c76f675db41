"""The rules for bad boxes and bad box files (docs/GUARANTEES.md): refused, clamped with one warning per file, or kept
with one warning; box files with NaN/inf values; the whole-image feature of a file without boxes; atomic writes."""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch

from common.data import boxes as box_rules
from common.data.box_files import BoxFileError, read_box_file, validate_box_file, whole_image_feature, write_box_file
from common.data.boxes import BoxError, check_boxes

GOOD = np.array([[0, 0, 99, 49, 0.9], [10, 5, 20, 30, 0.5], [0, 0, 100, 50, 0.1]], np.float32)  # last: x2 = x + w


@pytest.fixture(autouse=True)
def fresh_warnings():
    box_rules._WARNED.clear()  # "one warning per file" is per process; each test starts with none given


def test_valid_boxes_pass_unchanged_in_the_kind_given(caplog):
    with caplog.at_level(logging.WARNING):
        out = check_boxes(GOOD, 100, 50, "a.json")
        tensor = check_boxes(torch.from_numpy(GOOD), 100, 50, "a.json")
    np.testing.assert_array_equal(out, GOOD)  # up to one pixel past the edge is the x2 = x + w convention
    assert isinstance(tensor, torch.Tensor) and torch.equal(tensor, torch.from_numpy(GOOD))
    assert caplog.text == ""


@pytest.mark.parametrize("row, message", [
    ([np.nan, 0, 5, 5], "NaN or infinite"),
    ([0, 0, np.inf, 5], "NaN or infinite"),
    ([8, 0, 5, 5], "inverted"),
    ([0, 9, 5, 5], "inverted"),
    ([120, 0, 130, 5], "wholly outside the image"),
    ([-30, -20, -5, -2], "wholly outside the image"),
])
def test_unusable_boxes_are_refused_naming_file_and_box(row, message):
    boxes = np.concatenate([GOOD[:, :4], np.array([row], np.float32)])
    with pytest.raises(BoxError, match=rf"^f\.json: box 3 .*\(image 100 x 50\).*{message}"):
        check_boxes(boxes, 100, 50, "f.json")


def test_boxes_past_the_edge_are_clamped_with_one_warning_per_file(caplog):
    boxes = np.array([[-4, 2, 30, 20], [10, 10, 140, 70], [1, 1, 5, 5]], np.float32)
    with caplog.at_level(logging.WARNING):
        out = check_boxes(boxes, 100, 50, "g.json")
        again = check_boxes(boxes, 100, 50, "g.json")
    np.testing.assert_array_equal(out, [[0, 2, 30, 20], [10, 10, 99, 49], [1, 1, 5, 5]])
    np.testing.assert_array_equal(again, out)
    assert caplog.text.count("g.json: box 0") == 1 and "and 1 more reach outside the image; clamped" in caplog.text
    np.testing.assert_array_equal(boxes[0], [-4, 2, 30, 20])  # the caller's array is not modified


def test_zero_size_boxes_are_kept_with_a_warning(caplog):
    boxes = np.array([[5, 5, 5, 9], [1, 1, 8, 8]], np.float32)
    with caplog.at_level(logging.WARNING):
        out = check_boxes(boxes, 100, 50, "z.json")
    np.testing.assert_array_equal(out, boxes)
    assert "z.json: box 0 [5.0, 5.0, 5.0, 9.0]" in caplog.text and "zero width or height; kept" in caplog.text


def test_nan_or_inf_in_any_array_of_a_box_file_names_file_and_field(tmp_path):
    path = str(tmp_path / "1.json")
    features = np.ones((2, 8), np.float32)
    features[1, 3] = np.inf
    write_box_file(path, GOOD[:2, :4], features=features, image_w=100, image_h=50)
    with pytest.raises(BoxFileError, match=r"1\.json: field 'features' holds 1 NaN/inf value\(s\), the first at "
                                           r"position 11"):
        read_box_file(path, feature_dim=8)
    boxes = GOOD[:2, :4].copy()
    boxes[0, 1] = np.nan
    write_box_file(path, boxes, image_w=100, image_h=50)
    with pytest.raises(BoxFileError, match=r"1\.json: field 'boxes' holds 1 NaN/inf"):
        read_box_file(path, fields=())


def test_validate_box_file_checks_geometry_count_and_features(tmp_path):
    path = str(tmp_path / "2.json")
    write_box_file(path, np.array([[10, 5, 4, 30]], np.float32), image_w=100, image_h=50)
    assert read_box_file(path)["num_boxes"] == 1  # the plain reader leaves geometry to the datasets
    with pytest.raises(BoxFileError, match=r"2\.json: box 0 .* is inverted"):
        validate_box_file(path)
    write_box_file(path, np.zeros((0, 4), np.float32), image_w=100, image_h=50)
    with pytest.raises(BoxFileError, match=r"2\.json: 0 boxes, at least 1 needed"):
        validate_box_file(path, min_boxes=1)
    write_box_file(path, GOOD[:2, :4], image_w=100, image_h=50)
    with pytest.raises(BoxFileError, match=r"2\.json: no 'features' field"):
        validate_box_file(path, require_features=True)
    assert validate_box_file(path)["num_boxes"] == 2


def test_whole_image_feature_of_a_file_without_boxes(tmp_path):
    features = np.arange(16, dtype=np.float32).reshape(2, 8)
    assert whole_image_feature({"features": features}, "x").tolist() == features.mean(0).tolist()
    own = np.full(8, 7.0, np.float32)
    empty = {"num_boxes": 0, "features": np.zeros((0, 8), np.float32)}
    assert whole_image_feature({**empty, "image_box_feature": own}, "x").tolist() == own.tolist()
    with pytest.raises(BoxFileError, match=r"^e\.json: 0 boxes and no 'image_box_feature'"):
        whole_image_feature(empty, "e.json")


def test_write_box_file_is_atomic(tmp_path):
    path = str(tmp_path / "3.json")
    write_box_file(path, GOOD[:2, :4], image_w=100, image_h=50)
    before = open(path).read()
    with pytest.raises(TypeError):  # json cannot write this image_id: the write fails half-way
        write_box_file(path, GOOD[:1, :4], image_id=object())
    assert open(path).read() == before and json.loads(before)["num_boxes"] == 2
    assert os.listdir(tmp_path) == ["3.json"]  # no temporary file left behind
