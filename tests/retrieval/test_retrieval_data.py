"""The Karpathy-split reader and the retrieval items against the toy world's files (read independently with json),
and the data check."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from common.data.preflight import Problems
from common.data.transforms import build_transform
from retrieval.check import check_retrieval_data
from retrieval.dataset import ImageItems, PairItems, TextItems, interleaved_captions
from retrieval.karpathy import KarpathyError, read_karpathy
from retrieval.task import RETRIEVAL, karpathy_split


def raw_images(root: str, name: str, folder: str) -> list[dict]:
    with open(os.path.join(root, folder, name), encoding="utf-8") as f:
        return json.load(f)["images"]


@pytest.mark.parametrize("folder,name", [("flickr30k", "dataset_flickr30k.json"), ("coco", "dataset_coco.json")])
def test_reader_keeps_file_order_fields_and_joined_splits(small_world_root, folder, name):
    raw = raw_images(small_world_root, name, folder)
    path = os.path.join(small_world_root, folder, name)
    for image_set in ("train", "test", "val+test"):
        wanted = image_set.split("+")
        expected = [r for r in raw if r["split"] in wanted]
        images = read_karpathy(path, image_set)
        assert [im.filename for im in images] == [r["filename"] for r in expected]
        assert [list(im.captions) for im in images] == [[s["raw"] for s in r["sentences"]] for r in expected]
        assert [list(im.sentids) for im in images] == [r["sentids"] for r in expected]
    image = read_karpathy(path, "train")[0]
    first = next(r for r in raw if r["split"] == "train")
    if folder == "coco":  # COCO: filepath folder and box files named by cocoid
        assert image.relative_path == f"{first['filepath']}/{first['filename']}"
        assert image.box_stem == str(first["cocoid"]) and image.image_id == first["cocoid"]
    else:
        assert image.relative_path == first["filename"] and image.box_stem == first["filename"][:-4]


def test_reader_errors_name_the_file(tmp_path):
    bad = tmp_path / "dataset_flickr30k.json"
    bad.write_text(json.dumps({"images": [{"filename": "a.jpg", "split": "test", "sentences": []}]}))
    with pytest.raises(KarpathyError, match=r"dataset_flickr30k.json: images\[0\] \(a.jpg\) has no sentences"):
        read_karpathy(str(bad), "test")
    with pytest.raises(KarpathyError, match="unknown Karpathy split 'testing'"):
        read_karpathy(str(bad), "testing")
    with pytest.raises(KarpathyError, match="not found"):
        read_karpathy(str(tmp_path / "missing.json"), "test")


@pytest.mark.parametrize("cfg_extra", [(), ("DATASET.DATASET_PATH", "{root}/coco", "DATASET.ANNOTATION_FILE",
                                            "dataset_coco.json", "DATASET.IMAGE_FOLDER", "",
                                            "DATASET.BOX_FOLDER",
                                            "vgbua_res101_precomputed/trainval2014_resnet101_faster_rcnn_genome")])
def test_items_of_every_view(retrieval_tiny_cfg, small_world_root, cfg_extra):
    cfg = retrieval_tiny_cfg(*[v.format(root=small_world_root) for v in cfg_extra])
    split = karpathy_split(cfg, "test")
    assert len(split.texts) == 5 * len(split.images) and split.text_image[:6] == [0, 0, 0, 0, 0, 1]
    tokenizer = split.tokenizer
    text = TextItems(split)[6]["text"]
    assert tokenizer.convert_ids_to_tokens(text.tolist()) == ["[CLS]", *tokenizer.tokenize(split.texts[6]), "[SEP]"]
    image = ImageItems(split, build_transform(cfg, "test"))[1]
    assert image["boxes"].shape[0] == image["box_features"].shape[0] and image["index"] == 1
    assert image["boxes"][0, :2].tolist() == [0.0, 0.0]  # the whole image first
    pair = PairItems(split, build_transform(cfg, "test"), [(6, 1)])[0]
    assert torch.equal(pair["text"], text) and torch.equal(pair["boxes"], image["boxes"])
    train = RETRIEVAL.build_dataset(cfg, "train")
    assert len(train) == len(train.split.texts)
    item = train[7]
    assert item["image_index"] == train.split.text_image[7] == 1


def test_validation_captions_come_in_rounds_of_different_images(retrieval_tiny_cfg):
    """Read unshuffled, in-loop validation batches hold one caption per image until every image had one."""
    assert interleaved_captions([0, 0, 1, 1, 1, 2]) == [0, 2, 5, 1, 3, 4]
    cfg = retrieval_tiny_cfg()
    val = RETRIEVAL.build_dataset(cfg, "val")
    split, images = val.split, len(val.split.images)
    assert sorted(val.order) == list(range(len(split.texts)))  # every caption once
    items = [val[i] for i in range(len(val))]
    assert [item["image_index"] for item in items[:images]] == list(range(images))  # every image, file order
    for position, item in enumerate(items):
        text = val.order[position]
        assert item["index"] == position and item["image_index"] == split.text_image[text]
        assert torch.equal(item["text"], split.text_ids(text))
    train = RETRIEVAL.build_dataset(cfg, "train")  # training keeps the file order (and shuffles)
    assert [train[i]["image_index"] for i in range(6)] == train.split.text_image[:6]


def test_data_check_passes_the_toy_world_and_names_a_missing_box_file(retrieval_tiny_cfg, small_world_root,
                                                                      tmp_path):
    out = Problems()
    check_retrieval_data(retrieval_tiny_cfg(), out, samples=50, sections=("TRAIN", "VAL", "TEST"))
    assert out == []
    copy = tmp_path / "flickr30k"
    shutil.copytree(os.path.join(small_world_root, "flickr30k"), copy)
    victim = read_karpathy(str(copy / "dataset_flickr30k.json"), "test")[0].box_stem
    os.remove(copy / "flickr30k_frcnn" / f"{victim}.json")
    out = Problems()
    check_retrieval_data(retrieval_tiny_cfg("DATASET.DATASET_PATH", str(copy), "DATASET.TEST_IMAGE_SET", "tset"),
                         out, samples=50, sections=("TRAIN", "TEST"))
    assert any("unknown Karpathy split 'tset'" in p and "DATASET.TEST_IMAGE_SET" in p for p in out)
    out = Problems()
    check_retrieval_data(retrieval_tiny_cfg("DATASET.DATASET_PATH", str(copy)), out, samples=50, sections=("TEST",))
    assert out == [f"box file not found: {copy}/flickr30k_frcnn/{victim}.json (config DATASET.BOX_FOLDER)"]


def test_toy_world_sizes_and_box_files(small_world_root):
    """The toy Flickr30K holds the images per split that data/shape_world/generate.py declares (PREPARE_DATA.md),
    five captions each and a box file with features for every image; the toy COCO file splits val2014 into
    val / test / restval and names box files by cocoid."""
    from data.shape_world.generate import WORLD_SIZES
    from retrieval.check import region_file_problems

    flickr = os.path.join(small_world_root, "flickr30k")
    for split, count in WORLD_SIZES["small"].flickr:
        images = read_karpathy(os.path.join(flickr, "dataset_flickr30k.json"), split)
        assert len(images) == count and all(len(im.captions) == 5 for im in images)
        for image in images:
            assert region_file_problems(os.path.join(flickr, "flickr30k_frcnn", image.box_stem + ".json"), "x") == []
    coco = raw_images(small_world_root, "dataset_coco.json", "coco")
    val2014 = [r for r in coco if r["filepath"] == "val2014"]
    assert [r["split"] for r in val2014] == ["val"] * 5 + ["test"] * 5 + ["restval"] * 10
    assert all(r["split"] == "train" for r in coco if r["filepath"] == "train2014")
    assert len({s["sentid"] for r in coco for s in r["sentences"]}) == 5 * len(coco)
