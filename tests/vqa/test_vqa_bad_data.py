"""Bad VQA data is named, never silently used: box files with no boxes, NaN features or broken boxes, answers outside
the vocabulary, duplicate ids in a result file, unreadable images under DATASET.SKIP_UNREADABLE_IMAGES, and questions
longer than the position table (docs/GUARANTEES.md)."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil

import numpy as np
import pytest
import torch

from common.data.box_files import read_box_file, write_box_file
from common.data.collate import collate_dicts
from vqa import eval as vqa_eval_script
from vqa import predict as predict_script
from vqa.dataset import UNK, VQADataError
from vqa.task import VQA


@pytest.fixture
def world(vqa_toy_root, tmp_path) -> str:
    """A copy of the toy world's coco files that a test may damage (`DATASET.DATASET_PATH` = <returned>/coco)."""
    shutil.copytree(os.path.join(vqa_toy_root, "coco"), tmp_path / "coco",
                    ignore=shutil.ignore_patterns("train2017", "refcoco+", "test2015"))
    return str(tmp_path)


def world_cfg(vqa_tiny_cfg, world: str, *extra: str):
    coco = os.path.join(world, "coco")
    return vqa_tiny_cfg("DATASET.DATASET_PATH", coco, "DATASET.ANSWER_VOCAB_FILE",
                        os.path.join(coco, "vqa", "answers_vqa.txt"), *extra)


def rewrite_box_file(path: str, record: dict | None = None, **change) -> str:
    """Write a box file again (from `record`, default: as read) with some arrays replaced; returns its path."""
    record = record or read_box_file(path)
    arrays = {k: record[k] for k in ("boxes", "features", "classes", "attrs", "image_box_feature") if k in record}
    arrays.update(change)
    write_box_file(path, image_w=record["image_w"], image_h=record["image_h"], image_id=record["image_id"], **arrays)
    return path


NO_BOXES = dict(boxes=np.zeros((0, 4), np.float32), features=np.zeros((0, 2048), np.float32),
                classes=np.zeros((0, 1601), np.float32), attrs=np.zeros((0, 401), np.float32))


# ---- box files ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["val", "test"])
def test_box_file_without_boxes_is_refused_in_precomputed_mode(world, vqa_tiny_cfg, split):
    """Training and the leaderboard file: an error naming the file, not a whole-image feature made of NaN."""
    dataset = VQA.build_dataset(world_cfg(vqa_tiny_cfg, world), split)
    path = rewrite_box_file(dataset.box_file_path(dataset.samples[0]), **NO_BOXES)
    with pytest.raises(VQADataError, match=rf"{re.escape(path)}: 0 boxes and no 'image_box_feature'.*question "
                                           rf"{dataset.samples[0].question_id}"):
        dataset[0]


def test_box_file_without_boxes_uses_its_image_box_feature(world, vqa_tiny_cfg):
    dataset = VQA.build_dataset(world_cfg(vqa_tiny_cfg, world), "val")
    whole = np.arange(2048, dtype=np.float32)
    rewrite_box_file(dataset.box_file_path(dataset.samples[0]), **NO_BOXES, image_box_feature=whole)
    item = dataset[0]
    assert item["boxes"].shape == (1, 4) and torch.equal(item["box_features"], torch.from_numpy(whole)[None])


def test_box_file_without_boxes_end_to_end_keeps_the_whole_image(world, vqa_tiny_cfg, caplog):
    cfg = world_cfg(vqa_tiny_cfg, world, "NETWORK.IMAGE_FEAT_PRECOMPUTED", "false")
    dataset = VQA.build_dataset(cfg, "val")
    path = rewrite_box_file(dataset.box_file_path(dataset.samples[0]), **NO_BOXES)
    with caplog.at_level(logging.WARNING):
        item = dataset[0]
    width, height = dataset.image_sizes["val2014"][dataset.samples[0].image_id]
    scale_x, scale_y = float(item["im_info"][2]), float(item["im_info"][3])
    assert item["boxes"].shape == (1, 4)
    assert item["boxes"][0].tolist() == pytest.approx([0, 0, (width - 1) * scale_x, (height - 1) * scale_y], abs=1e-3)
    assert f"{path}: no boxes" in caplog.text


def test_nan_features_and_broken_boxes_name_the_file(world, vqa_tiny_cfg):
    dataset = VQA.build_dataset(world_cfg(vqa_tiny_cfg, world), "val")
    path = dataset.box_file_path(dataset.samples[0])
    record = read_box_file(path)
    features = record["features"].copy()
    features[1, 7] = np.nan
    rewrite_box_file(path, features=features)
    with pytest.raises(ValueError, match=rf"{re.escape(path)}: field 'features' holds 1 NaN/inf"):
        dataset[0]
    inverted = record["boxes"].copy()
    inverted[2, 0] = inverted[2, 2] + 5
    rewrite_box_file(path, record, boxes=inverted)
    with pytest.raises(VQADataError, match=rf"{re.escape(path)}: box 2 .* is inverted"):
        dataset[0]


# ---- answers outside the vocabulary ---------------------------------------------------------------------------
def test_share_without_target_is_logged_and_bounded(world, vqa_tiny_cfg, caplog):
    a_path = os.path.join(world, "coco", "vqa", "v2_mscoco_val2014_annotations.json")
    with open(a_path) as f:
        data = json.load(f)
    for ann in data["annotations"][:10]:  # 10 questions whose every human answer is unknown to the vocabulary
        for answer in ann["answers"]:
            answer["answer"] = "zebra-striped " + answer["answer"]
    with open(a_path, "w") as f:
        json.dump(data, f)
    total = len(data["annotations"])
    with caplog.at_level(logging.INFO):
        dataset = VQA.build_dataset(world_cfg(vqa_tiny_cfg, world), "val")
    assert f"10 of {total} questions ({100 * 10 / total:.1f}%) have no answer in" in caplog.text
    assert not dataset[0]["answer_scores"].any()  # the first question is one of them: an all-zero target
    with pytest.raises(VQADataError, match=rf"10 of {total} questions .* above DATASET.MAX_NO_TARGET_FRACTION 0.05"):
        VQA.build_dataset(world_cfg(vqa_tiny_cfg, world, "DATASET.MAX_NO_TARGET_FRACTION", "0.05"), "val")


def test_vocabulary_that_fits_no_answer_is_refused(world, vqa_tiny_cfg):
    vocab = os.path.join(world, "coco", "vqa", "answers_vqa.txt")
    with open(vocab) as f:
        size = sum(1 for line in f if line.strip())
    with open(vocab, "w") as f:  # the right size, but answers of another dataset
        f.write("\n".join([UNK] + [f"other answer {i}" for i in range(size - 1)]) + "\n")
    with pytest.raises(VQADataError, match=r"\(100.0%\) have no human answer in the answer vocabulary"):
        VQA.build_dataset(world_cfg(vqa_tiny_cfg, world), "train")


# ---- result files ---------------------------------------------------------------------------------------------
def test_duplicate_question_ids_in_a_result_file_are_refused(vqa_toy_root, tmp_path):
    vqa_dir = os.path.join(vqa_toy_root, "coco", "vqa")
    with open(os.path.join(vqa_dir, "v2_OpenEnded_mscoco_val2014_questions.json")) as f:
        qids = [q["question_id"] for q in json.load(f)["questions"]]
    results = [{"question_id": q, "answer": "red"} for q in qids] + [{"question_id": qids[3], "answer": "blue"}]
    path = tmp_path / "dup.json"
    path.write_text(json.dumps(results))
    with pytest.raises(ValueError, match=rf"dup.json: 1 question id\(s\) answered more than once: {qids[3]} \(2x\)"):
        vqa_eval_script.main(["--result", str(path), "--questions",
                              os.path.join(vqa_dir, "v2_OpenEnded_mscoco_val2014_questions.json"),
                              "--annotations", os.path.join(vqa_dir, "v2_mscoco_val2014_annotations.json")])


# ---- unreadable images ----------------------------------------------------------------------------------------
def test_skip_unreadable_images_gives_a_black_image(world, vqa_tiny_cfg, caplog):
    overrides = ("NETWORK.IMAGE_FEAT_PRECOMPUTED", "false", "SCALES", "[64, 96]")
    dataset = VQA.build_dataset(world_cfg(vqa_tiny_cfg, world, *overrides), "val")
    path = dataset.image_path(dataset.samples[0])
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])  # a truncated JPEG
    with pytest.raises(VQADataError, match=rf"cannot read image {re.escape(path)}"):
        dataset[0]
    skipping = VQA.build_dataset(world_cfg(vqa_tiny_cfg, world, *overrides, "DATASET.SKIP_UNREADABLE_IMAGES",
                                           "true"), "val")
    with caplog.at_level(logging.WARNING):
        item = skipping[0]
    assert path in caplog.text and "SKIP_UNREADABLE_IMAGES" in caplog.text
    means = torch.tensor(skipping.transform.pixel_means).view(3, 1, 1)
    assert torch.equal(item["image"], -means.expand_as(item["image"]))  # black pixels, Caffe-normalised
    assert torch.equal(item["boxes"], dataset.transform(None, dataset.regions(dataset.samples[0])[0],
                                                        image_size=skipping.image_sizes["val2014"][
                                                            dataset.samples[0].image_id])["boxes"])


# ---- questions longer than the position table -----------------------------------------------------------------
def test_long_question_is_cut_to_the_position_table(world, vqa_tiny_cfg, caplog):
    q_path = os.path.join(world, "coco", "vqa", "v2_OpenEnded_mscoco_val2014_questions.json")
    with open(q_path) as f:
        data = json.load(f)
    data["questions"][0]["question"] = " ".join(["what"] * 300) + " color is it?"
    with open(q_path, "w") as f:
        json.dump(data, f)
    cfg = world_cfg(vqa_tiny_cfg, world, "NETWORK.VLBERT.max_position_embeddings", "64")
    dataset = VQA.build_dataset(cfg, "val")
    with caplog.at_level(logging.WARNING):
        item = dataset[0]
    num_boxes = len(item["boxes"])
    assert len(item["question"]) == 64 - 4 - num_boxes - 1  # [CLS] q [SEP] [MASK] [SEP], the boxes and [END]
    assert f"question {data['questions'][0]['question_id']}: text of" in caplog.text
    module = VQA.build_module(cfg).eval()
    with torch.no_grad():  # the same batch raised IndexError inside F.embedding before
        logits = module(collate_dicts([item, dataset[1]], dataset.PAD_RULES))["label_logits"]
    assert torch.isfinite(logits).all()


def test_predict_cuts_a_long_question(vqa_tiny_cfg, vqa_toy_root, tmp_path, caplog):
    cfg = vqa_tiny_cfg("NETWORK.VLBERT.max_position_embeddings", "64")
    torch.manual_seed(0)
    module = VQA.build_module(cfg)
    ckpt = str(tmp_path / "tiny.model")
    torch.save({"state_dict": {"module." + k: v for k, v in module.state_dict().items()}}, ckpt)
    dataset = VQA.build_dataset(cfg, "val")
    sample = dataset.samples[0]
    with caplog.at_level(logging.WARNING):
        answers = predict_script.predict(cfg, ckpt, dataset.image_path(sample), "what " * 200 + "is it?",
                                         box_file=dataset.box_file_path(sample))
    assert len(answers) == 5 and "--question 'what what" in caplog.text


def test_describe_names_question_image_and_files(world, vqa_tiny_cfg):
    """What the non-finite guard says of an item: read back from the question file independently."""
    coco = os.path.join(world, "coco")
    with open(os.path.join(coco, "vqa", "v2_OpenEnded_mscoco_val2014_questions.json")) as f:
        first = json.load(f)["questions"][0]
    dataset = VQA.build_dataset(world_cfg(vqa_tiny_cfg, world), "val")
    text = dataset.describe(0)
    box_file = text.split("box file ")[1].rstrip(")")
    assert text == f"question {first['question_id']} (image {first['image_id']} of val2014; box file {box_file})"
    assert os.path.isfile(box_file) and box_file.endswith(f"{first['image_id']}.json")
    end_to_end = VQA.build_dataset(world_cfg(vqa_tiny_cfg, world, "NETWORK.IMAGE_FEAT_PRECOMPUTED", "false"), "val")
    image = os.path.join(coco, "val2014", f"COCO_val2014_{first['image_id']:012d}.jpg")
    assert end_to_end.describe(0).endswith(f", image {image})") and os.path.isfile(image)
