"""data/captions_to_pretrain.py: a 5-row CSV (two bad rows) and a JSON-lines file become the Conceptual Captions
layout; each index line resolves to the copied files, and the pre-training dataset reads them back."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from common.data.box_files import write_box_file
from data import captions_to_pretrain


@pytest.fixture()
def pairs(tmp_path):
    """Images a, b, c (box files for a, b, d), so CSV rows: a ok, b ok, missing image, c without box file, a again."""
    images, boxes = tmp_path / "photos", tmp_path / "boxes"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i, stem in enumerate("abc"):
        Image.fromarray((rng.random((20 + i, 30, 3)) * 255).astype(np.uint8)).save(images / f"{stem}.jpg")
    for i, stem in enumerate("abd"):
        n = 2 + i
        write_box_file(str(boxes / f"{stem}.json"), boxes=np.tile([[1, 2, 10, 12]], (n, 1)),
                       classes=np.full((n, 4), 0.25), image_w=30, image_h=20 + i)
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text('image,caption\n'
                        'photos/a.jpg,a red square on grey\n'
                        f'{images / "b.jpg"},"two  circles, side by side"\n'
                        'photos/missing.jpg,nothing here\n'
                        'photos/c.jpg,a picture without boxes\n'
                        'photos/a.jpg,the same picture again\n')
    return tmp_path, csv_path, boxes


def read_lines(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_csv_to_conceptual_captions_layout(pairs, caplog):
    root, csv_path, boxes = pairs
    out = root / "cc"
    result = captions_to_pretrain.convert(str(csv_path), str(boxes), str(out), "train")
    assert result["written"] == 3 and [row for row, _ in result["skipped"]] == [3, 4]
    assert "row 3" in caplog.text and "missing.jpg" in caplog.text
    assert "row 4" in caplog.text and "c.json" in caplog.text

    lines = read_lines(out / "train_frcnn.json")
    assert [line["image"] for line in lines] == [f"train_image.zip@/{n:08d}.jpg" for n in (0, 1, 4)]
    assert [line["frcnn"] for line in lines] == [f"train_frcnn.zip@/{n:08d}.json" for n in (0, 1, 4)]
    assert lines[1]["caption"] == ["two", "circles,", "side", "by", "side"]
    sources = ["a", "b", "a"]
    for line, stem in zip(lines, sources, strict=True):
        image = out / line["image"].replace(".zip@", "")
        frcnn = out / line["frcnn"].replace(".zip@", "")
        assert image.read_bytes() == (root / "photos" / f"{stem}.jpg").read_bytes()
        assert frcnn.read_bytes() == (boxes / f"{stem}.json").read_bytes()


def test_pretraining_dataset_reads_the_output(pairs):
    conceptual_captions = pytest.importorskip("common.data.captions")
    root, csv_path, boxes = pairs
    out = root / "cc"
    captions_to_pretrain.convert(str(csv_path), str(boxes), str(out), "train")
    dataset = conceptual_captions.ConceptualCaptionsDataset(str(out), "train", builder=None)
    assert len(dataset) == 3
    raw = dataset.read_raw(1)
    assert raw.image.size == (30, 21) and raw.boxes.shape == (3, 4) and raw.classes.shape == (3, 4)
    assert raw.words == ["two", "circles,", "side", "by", "side"]


def test_jsonl_input_links_and_errors(pairs, tmp_path):
    root, _, boxes = pairs
    jsonl = root / "pairs.jsonl"
    jsonl.write_text(json.dumps({"image": "photos/b.jpg", "caption": ["already", "split"]}) + "\n\n"
                     + json.dumps({"image": "photos/a.jpg", "caption": "   "}) + "\n")
    result = captions_to_pretrain.convert(str(jsonl), str(boxes), str(tmp_path / "v"), "val", link=True)
    assert result["written"] == 1 and result["skipped"] == [(2, "empty caption")]
    assert read_lines(tmp_path / "v" / "val_frcnn.json")[0]["caption"] == ["already", "split"]
    assert os.path.islink(tmp_path / "v" / "val_image" / "00000000.jpg")

    bad_header = root / "bad.csv"
    bad_header.write_text("path,text\nphotos/a.jpg,hello\n")
    with pytest.raises(ValueError, match=r"bad\.csv.*image,caption"):
        captions_to_pretrain.convert(str(bad_header), str(boxes), str(tmp_path / "x"))
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        captions_to_pretrain.convert(str(root / "nope.csv"), str(boxes), str(tmp_path / "x"))
