"""Bottom-up-attention box files: round trip, the format's own decoding rule, and errors naming file and field."""
import base64
import json
import zipfile

import numpy as np
import pytest

from common.data.box_files import BoxFileError, encode_array, read_box_file, write_box_file


def sample(num_boxes=3, feature_dim=2048):
    rng = np.random.default_rng(0)
    return dict(boxes=rng.uniform(0, 50, (num_boxes, 4)).astype(np.float32),
                features=rng.standard_normal((num_boxes, feature_dim)).astype(np.float32),
                classes=rng.uniform(0, 1, (num_boxes, 1601)).astype(np.float32),
                image_box_feature=rng.standard_normal(feature_dim).astype(np.float32))


def test_round_trip_and_the_documented_decoding(tmp_path):
    arrays = sample()
    path = tmp_path / "42.json"
    write_box_file(str(path), image_w=640, image_h=480, image_id=42, **arrays)
    record = json.loads(path.read_text())
    # the decoding given with the format: np.frombuffer(base64.decodebytes(s.encode()), np.float32)
    reference = np.frombuffer(base64.decodebytes(record["features"].encode()), np.float32).reshape(3, -1)
    np.testing.assert_array_equal(reference, arrays["features"])
    out = read_box_file(str(path))
    assert (out["num_boxes"], out["image_w"], out["image_h"], out["image_id"]) == (3, 640, 480, 42)
    for key, value in arrays.items():
        np.testing.assert_array_equal(out[key], value)
    assert out["boxes"].dtype == np.float32 and out["classes"].shape == (3, 1601)
    only_boxes = read_box_file(str(path), fields=["boxes"])
    assert set(only_boxes) == {"boxes", "num_boxes", "image_w", "image_h", "image_id"}


def test_reads_from_inside_a_zip(tmp_path):
    arrays = sample(2, 8)
    write_box_file(str(tmp_path / "7.json"), boxes=arrays["boxes"], features=arrays["features"])
    with zipfile.ZipFile(tmp_path / "frcnn.zip", "w") as zf:
        zf.write(tmp_path / "7.json", "7.json")
    out = read_box_file(f"{tmp_path / 'frcnn.zip'}@/7.json", feature_dim=8)
    np.testing.assert_array_equal(out["features"], arrays["features"])


def write_record(path, **fields):
    path.write_text(json.dumps(fields))
    return str(path)


def test_arrays_that_disagree_in_length_name_file_and_field(tmp_path):
    arrays = sample(3)
    short = write_record(tmp_path / "short.json", num_boxes=3, boxes=encode_array(arrays["boxes"]),
                         features=encode_array(arrays["features"][:2]))
    with pytest.raises(BoxFileError, match=r"short\.json.*'features'"):
        read_box_file(short)
    wrong_count = write_record(tmp_path / "count.json", num_boxes=4, boxes=encode_array(arrays["boxes"]))
    with pytest.raises(BoxFileError, match=r"count\.json.*'boxes'"):
        read_box_file(wrong_count)
    # 3 rows of 2048 read as 6 rows of 1024 would fit num_boxes=6 only with the width check
    halves = write_record(tmp_path / "halves.json", num_boxes=6, boxes=encode_array(np.zeros((6, 4))),
                          features=encode_array(arrays["features"]))
    with pytest.raises(BoxFileError, match=r"halves\.json.*'features'"):
        read_box_file(halves)


def test_invalid_json_and_base64_are_named(tmp_path):
    (tmp_path / "broken.json").write_text('{"boxes": ')
    with pytest.raises(BoxFileError, match="broken.json"):
        read_box_file(str(tmp_path / "broken.json"))
    bad = write_record(tmp_path / "b64.json", num_boxes=1, boxes="@@not-base64@@")
    with pytest.raises(BoxFileError, match=r"b64\.json.*'boxes'.*base64"):
        read_box_file(bad)
    odd = write_record(tmp_path / "odd.json", boxes=base64.b64encode(b"12345").decode())
    with pytest.raises(BoxFileError, match="float32"):
        read_box_file(odd)


def test_writer_rejects_mismatched_rows(tmp_path):
    with pytest.raises(ValueError, match="features"):
        write_box_file(str(tmp_path / "x.json"), boxes=np.zeros((2, 4)), features=np.zeros((3, 8)))
