"""Image/bytes/JSON reading from folders and zip archives; errors name the file, archive and entry."""
import io
import json
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from common.data import image_io
from common.data.image_io import ImageReadError, image_size, open_image, read_bytes, read_json, split_zip_path


def jpeg_bytes(width=32, height=24):
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "train_image.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("00000001.jpg", jpeg_bytes())
        zf.writestr("meta/00000001.json", json.dumps({"a": 1}))
    (tmp_path / "plain.jpg").write_bytes(jpeg_bytes())
    return path


def test_split_zip_path():
    assert split_zip_path("data/cc/train_image.zip@/00000042.jpg") == ("data/cc/train_image.zip", "00000042.jpg")
    assert split_zip_path("a.zip@b/c.json") == ("a.zip", "b/c.json")
    assert split_zip_path("data/cc/train_image/00000042.jpg") is None


def test_zip_and_folder_give_the_same_pixels(archive, tmp_path):
    from_zip = open_image(f"{archive}@/00000001.jpg")
    from_folder = open_image(str(tmp_path / "plain.jpg"))
    assert from_zip.mode == "RGB" and from_zip.size == (32, 24) == image_size(f"{archive}@/00000001.jpg")
    np.testing.assert_array_equal(np.asarray(from_zip), np.asarray(from_folder))
    assert read_json(f"{archive}@/meta/00000001.json") == {"a": 1}


def test_missing_zip_entry_names_archive_and_entry(archive):
    with pytest.raises(FileNotFoundError) as info:
        read_bytes(f"{archive}@/nope/00000009.jpg")
    assert str(archive) in str(info.value) and "nope/00000009.jpg" in str(info.value)
    with pytest.raises(FileNotFoundError, match="absent.zip"):
        read_bytes(str(archive.parent / "absent.zip") + "@/x.jpg")


def test_truncated_image_raises_naming_the_file_or_returns_none(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(jpeg_bytes(64, 64)[:300])
    with pytest.raises(ImageReadError, match="broken.jpg"):
        open_image(str(path))
    assert open_image(str(path), none_on_error=True) is None
    with pytest.raises(ImageReadError, match="missing.jpg"):
        open_image(str(tmp_path / "missing.jpg"))


def test_invalid_json_names_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        read_json(str(path))


def test_one_handle_per_archive_per_process(archive, monkeypatch):
    first = image_io.open_archive(str(archive))
    assert image_io.open_archive(str(archive)) is first
    real_pid = os.getpid()
    monkeypatch.setattr(image_io.os, "getpid", lambda: real_pid + 1)  # as seen from a forked worker
    second = image_io.open_archive(str(archive))
    assert second is not first
    assert all(pid == real_pid + 1 for pid, _ in image_io._ARCHIVES)


def test_open_image_or_blank_follows_skip_unreadable(tmp_path, caplog):
    good, broken = tmp_path / "good.jpg", tmp_path / "broken.jpg"
    data = jpeg_bytes(32, 24)
    good.write_bytes(data)
    broken.write_bytes(data[: len(data) // 2])  # truncated mid-scan
    assert image_io.open_image_or_blank(str(good), (5, 5), True).size == (32, 24)
    with pytest.raises(ImageReadError, match="broken.jpg"):
        image_io.open_image_or_blank(str(broken), (32, 24), False)
    with pytest.raises(ImageReadError, match="broken.jpg"):  # no size from the annotations: nothing to stand in
        image_io.open_image_or_blank(str(broken), None, True)
    with caplog.at_level("WARNING"):
        blank = image_io.open_image_or_blank(str(broken), (40, 30), True)
        missing = image_io.open_image_or_blank(str(tmp_path / "none.jpg"), (8, 6), True)
    assert blank.size == (40, 30) and not np.asarray(blank).any() and missing.size == (8, 6)
    assert "broken.jpg" in caplog.text and "none.jpg" in caplog.text and "SKIP_UNREADABLE_IMAGES" in caplog.text


def test_write_json_atomic_keeps_the_old_file_on_failure(tmp_path):
    path = str(tmp_path / "sub" / "r.json")
    image_io.write_json_atomic(path, [1, 2])
    with pytest.raises(TypeError):
        image_io.write_json_atomic(path, [3, object()])
    assert read_json(path) == [1, 2] and os.listdir(tmp_path / "sub") == ["r.json"]
