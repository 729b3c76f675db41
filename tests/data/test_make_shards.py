"""data/make_shards.py on the small toy world: every shard member checked against the files it came from, folders
and zips giving the same bytes, resumption that rewrites only incomplete shards, bad items skipped and reported by
key (exit status 0, or 3 with --fail-on-skip), a failed shard (exit 1) written by the next run, parts and worker
processes giving the same shards, img2dataset input with box files or the detector, and the text corpus."""
from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import detection
from webdataset import TarWriter

from common.data.box_files import read_box_file, write_box_file
from common.data.captions import folder_path, read_caption_index
from common.data.shards import iter_shard
from data import captions_to_pretrain, extract_boxes
from data.make_shards import main
from pretrain.datasets.general_corpus import read_corpus_lines


def cc_root(world: str) -> str:
    return os.path.join(world, "conceptual-captions")


def shard_samples(folder: str, prefix: str = "train") -> list[list[dict]]:
    names = sorted(n for n in os.listdir(folder) if n.startswith(f"{prefix}-0") and n.endswith(".tar"))
    return [list(iter_shard(os.path.join(folder, name))) for name in names]


def npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def tar_bytes(folder: str) -> dict[str, bytes]:
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder)) if n.endswith(".tar")}


def test_cc_layout_to_shards_member_by_member(small_world_root, tmp_path, capsys):
    root = cc_root(small_world_root)
    assert main(["cc", "--root", root, "--out", str(tmp_path / "f"), "--samples-per-shard", "8",
                 "--content", "both"]) == 0
    assert "all 5 shards complete: 40 samples" in capsys.readouterr().out
    records = read_caption_index(os.path.join(root, "train_frcnn.json"))
    shards = shard_samples(str(tmp_path / "f"))
    assert [len(s) for s in shards] == [8] * 5
    for number, samples in enumerate(shards):
        for offset, sample in enumerate(samples):
            index = number * 8 + offset  # shard k holds records [8k, 8k + 8)
            record, meta = records[index], json.loads(sample["json"])
            boxes = read_box_file(os.path.join(root, folder_path(record["frcnn"])))
            assert sample["__key__"] == f"{index:09d}" and meta["index"] == index
            assert meta["caption"] == record["caption"]
            assert (meta["image_w"], meta["image_h"]) == (boxes["image_w"], boxes["image_h"])
            with open(os.path.join(root, folder_path(record["image"])), "rb") as handle:
                assert sample["jpg"] == handle.read()
            for field in ("boxes", "classes", "features"):
                assert np.array_equal(npy(sample[f"{field}.npy"]), boxes[field])
    manifest = json.load(open(tmp_path / "f" / "train-manifest.json"))
    assert manifest["samples"] == 40 and manifest["pattern"] == "train-{000000..000004}.tar"
    assert main(["cc", "--root", root, "--zip-mode", "--out", str(tmp_path / "z"), "--samples-per-shard", "8",
                 "--content", "both"]) == 0
    assert tar_bytes(str(tmp_path / "z")) == tar_bytes(str(tmp_path / "f"))


def test_resume_rewrites_only_incomplete_shards(small_world_root, tmp_path, capsys):
    args = ["cc", "--root", cc_root(small_world_root), "--out", str(tmp_path), "--samples-per-shard", "8"]
    assert main(args) == 0
    first = tar_bytes(str(tmp_path))
    untouched = os.stat(tmp_path / "train-000000.tar").st_mtime_ns
    os.remove(tmp_path / "train-000002.json")  # killed between the rename and the record
    with open(tmp_path / "train-000003.tar", "r+b") as handle:  # cut after it was made
        handle.truncate(1000)
    open(tmp_path / "train-000004.tar.tmp-12345", "wb").close()  # a temporary file left by a killed run
    capsys.readouterr()
    assert main(args) == 0
    assert "2 shards written now, 3 already complete" in capsys.readouterr().out
    assert tar_bytes(str(tmp_path)) == first
    assert os.stat(tmp_path / "train-000000.tar").st_mtime_ns == untouched


def test_bad_items_are_skipped_and_reported_by_key(small_world_root, tmp_path, capsys):
    root = str(tmp_path / "cc")
    shutil.copytree(cc_root(small_world_root), root)
    records = read_caption_index(os.path.join(root, "train_frcnn.json"))
    with open(os.path.join(root, folder_path(records[3]["image"])), "r+b") as handle:
        handle.truncate(200)  # a cut JPEG
    os.remove(os.path.join(root, folder_path(records[9]["frcnn"])))
    args = ["cc", "--root", root, "--out", str(tmp_path / "out"), "--samples-per-shard", "8"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 samples skipped" in out and "skipped 000000003: " in out and "skipped 000000009: " in out
    assert [len(s) for s in shard_samples(str(tmp_path / "out"))] == [7, 7, 8, 8, 8]
    assert [s["__key__"] for s in shard_samples(str(tmp_path / "out"))[2]][0] == "000000016"  # no shift
    record = json.load(open(tmp_path / "out" / "train-000001.json"))
    assert record["skipped"][0]["key"] == "000000009" and "00000009.json" in record["skipped"][0]["reason"]
    assert len(json.load(open(tmp_path / "out" / "train-manifest.json"))["skipped"]) == 2
    assert main([*args, "--fail-on-skip"]) == 3  # resumed: nothing rewritten, the skips are in the records


def test_a_failed_shard_is_written_by_the_next_run(small_world_root, tmp_path, capsys):
    args = ["cc", "--root", cc_root(small_world_root), "--out", str(tmp_path), "--samples-per-shard", "8"]
    blocked = tmp_path / f"train-000001.tar.tmp-{os.getpid()}"  # open_atomic's temporary name (one process)
    os.makedirs(blocked)  # the shard's temporary file cannot be opened
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "4 shards written now, 0 already complete, 1 failed" in out and "FAILED" in out
    assert not (tmp_path / "train-manifest.json").exists()
    os.rmdir(blocked)
    assert main(args) == 0 and (tmp_path / "train-manifest.json").exists()


def test_parts_and_worker_processes_write_the_same_shards(small_world_root, tmp_path):
    args = ["cc", "--root", cc_root(small_world_root), "--samples-per-shard", "8"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    for part in (0, 1):
        assert main([*args, "--out", str(tmp_path / "parts"), "--num-parts", "2", "--part", str(part)]) == 0
        assert (tmp_path / "parts" / "train-manifest.json").exists() == (part == 1)  # when all are done
    assert main([*args, "--out", str(tmp_path / "pool"), "--workers", "2"]) == 0
    assert tar_bytes(str(tmp_path / "parts")) == tar_bytes(str(tmp_path / "one")) == tar_bytes(str(tmp_path / "pool"))


def test_captions_to_pretrain_output_to_shards(small_world_root, tmp_path):
    root = cc_root(small_world_root)
    records = read_caption_index(os.path.join(root, "train_frcnn.json"))
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    lines = []
    for i in range(3):
        image = os.path.join(root, folder_path(records[i]["image"]))
        shutil.copy(os.path.join(root, folder_path(records[i]["frcnn"])), boxes / f"{i:08d}.json")
        lines.append(json.dumps({"image": image, "caption": " ".join(records[i]["caption"])}))
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    captions_to_pretrain.convert(str(tmp_path / "pairs.jsonl"), str(boxes), str(tmp_path / "mine"))
    assert main(["cc", "--root", str(tmp_path / "mine"), "--out", str(tmp_path / "shards")]) == 0
    (samples,) = shard_samples(str(tmp_path / "shards"))
    assert [json.loads(s["json"])["caption"] for s in samples] == [records[i]["caption"] for i in range(3)]


def write_img2dataset_shards(world: str, folder: str) -> list[bytes]:
    """Two img2dataset-like shards of 3 samples (`<key>.jpg`, `.txt`, `.json`); key 000000004 has an empty caption
    and key 000010001 a broken image. Returns the image bytes by sample order."""
    root = cc_root(world)
    records = read_caption_index(os.path.join(root, "train_frcnn.json"))
    images = []
    os.makedirs(folder, exist_ok=True)
    for shard, keys in enumerate((["000000000", "000000003", "000000004"], ["000010000", "000010001", "000010002"])):
        with TarWriter(os.path.join(folder, f"{shard:05d}.tar"), encoder=False) as writer:
            for i, key in enumerate(keys):
                record = records[shard * 3 + i]
                image = open(os.path.join(root, folder_path(record["image"])), "rb").read()
                image = b"\xff\xd8 not a jpeg" if key == "000010001" else image
                caption = "" if key == "000000004" else " ".join(record["caption"])
                writer.write({"__key__": key, "jpg": image, "txt": caption.encode(),
                              "json": json.dumps({"key": key, "status": "success"}).encode()})
                images.append(image)
    return images


def test_img2dataset_shards_with_box_files(small_world_root, tmp_path, capsys):
    write_img2dataset_shards(small_world_root, str(tmp_path / "in"))
    boxes = tmp_path / "boxes"
    for key in ("000000000", "000000003", "000010000", "000010002"):
        write_box_file(str(boxes / f"{key}.json"), boxes=np.array([[1, 2, 30, 40]], np.float32),
                       classes=np.array([[0.1, 0.9]], np.float32), image_w=999, image_h=888)
    assert main(["img2dataset", "--input", str(tmp_path / "in" / "{00000..00001}.tar"), "--boxes-dir", str(boxes),
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "skipped 000000004: " in out and "empty or missing caption" in out
    assert "skipped 000010001: " in out and "image" in out
    shards = shard_samples(str(tmp_path / "out"))
    assert [[s["__key__"] for s in shard] for shard in shards] == [["000000000", "000000003"], ["000010000",
                                                                                                "000010002"]]
    meta = json.loads(shards[1][1]["json"])
    assert meta["index"] == 10002 and (meta["image_w"], meta["image_h"]) == (999, 888)
    assert np.array_equal(npy(shards[1][1]["classes.npy"]), np.array([[0.1, 0.9]], np.float32))


def test_img2dataset_shards_with_the_detector(small_world_root, tmp_path):
    """Boxes from the detector equal extract_boxes.py's box files for the same images and weights."""
    images = write_img2dataset_shards(small_world_root, str(tmp_path / "in"))
    torch.manual_seed(0)
    model = detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=5)
    torch.save(model.state_dict(), tmp_path / "detector.pth")
    options = ["--detector", "fasterrcnn_mobilenet_v3_large_320_fpn", "--weights", str(tmp_path / "detector.pth"),
               "--min-size", "64", "--max-size", "96", "--min-boxes", "3", "--max-boxes", "8", "--device", "cpu"]
    assert main(["img2dataset", "--input", str(tmp_path / "in" / "00000.tar"), "--out", str(tmp_path / "out"),
                 "--batch-size", "2", *options]) == 0
    folder = tmp_path / "images"
    folder.mkdir()
    for key, image in zip(("000000000", "000000003"), images, strict=False):
        (folder / f"{key}.jpg").write_bytes(image)
    extract_boxes.main(["--images", str(folder), "--out", str(tmp_path / "boxes"), "--workers", "0", *options])
    (samples,) = shard_samples(str(tmp_path / "out"))
    assert [s["__key__"] for s in samples] == ["000000000", "000000003"]
    for sample in samples:
        expected = read_box_file(str(tmp_path / "boxes" / f"{sample['__key__']}.json"), feature_dim=None)
        assert np.allclose(npy(sample["boxes.npy"]), expected["boxes"], atol=1e-4)
        assert np.allclose(npy(sample["classes.npy"]), expected["classes"], atol=1e-5)
        assert Image.open(io.BytesIO(sample["jpg"])).size == (expected["image_w"], expected["image_h"])


def test_corpus_to_shards(small_world_root, tmp_path):
    corpus = os.path.join(small_world_root, "en_corpus")
    files = f"{corpus}/bc1g.doc+{corpus}/wiki.doc"
    assert main(["corpus", "--input", files, "--out", str(tmp_path), "--samples-per-shard", "50"]) == 0
    texts = [s["txt"].decode() for shard in shard_samples(str(tmp_path), "corpus") for s in shard]
    assert texts == list(read_corpus_lines(files))
    assert main(["corpus", "--input", f"{corpus}/missing.doc", "--out", str(tmp_path)]) == 2


@pytest.mark.parametrize("bad", [["--samples-per-shard", "0"], ["--part", "2", "--num-parts", "2"]])
def test_bad_arguments_exit_2(small_world_root, tmp_path, bad):
    with pytest.raises(SystemExit) as exit_info:
        main(["cc", "--root", cc_root(small_world_root), "--out", str(tmp_path), *bad])
    assert exit_info.value.code == 2
