"""VQADataset on the small toy world (items, soft targets against the official accuracy, flip) and its errors."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from common.data.box_files import read_box_file, write_box_file
from common.data.tokenizer import BertTokenizer
from common.data.transforms import VisualTransform
from vqa.dataset import VQADataError, VQADataset, answer_index, read_answer_vocab, soft_scores
from vqa.vqa_eval import vqa_accuracy


def make_dataset(root: str, bert_dir: str, image_set: str = "train2014", flip: float = 0.0, **kwargs) -> VQADataset:
    coco = os.path.join(root, "coco")
    kwargs.setdefault("boxes", "10-100ada")
    return VQADataset(image_set, coco, os.path.join(coco, "vqa", "answers_vqa.txt"),
                      VisualTransform(min_size=240, max_size=400, flip_prob=flip),
                      BertTokenizer.from_pretrained_dir(bert_dir), **kwargs)


def load_json(path: str):
    with open(path) as f:
        return json.load(f)


def test_items_match_the_files(vqa_toy_root, vqa_vocab_only_dir):
    ds = make_dataset(vqa_toy_root, vqa_vocab_only_dir)
    coco = os.path.join(vqa_toy_root, "coco")
    questions = load_json(os.path.join(coco, "vqa", "v2_OpenEnded_mscoco_train2014_questions.json"))["questions"]
    assert len(ds) == len(questions)
    q = questions[5]
    item = ds[5]
    assert item["question_id"] == q["question_id"] and item["index"] == 5
    tok = BertTokenizer.from_pretrained_dir(vqa_vocab_only_dir)
    assert item["question"].tolist() == tok.convert_tokens_to_ids(tok.tokenize(q["question"]))
    assert tok.cls_id not in item["question"].tolist() and tok.sep_id not in item["question"].tolist()
    record = read_box_file(os.path.join(coco, "vgbua_res101_precomputed", "trainval2014_resnet101_faster_rcnn_genome",
                                        f"{q['image_id']}.json"))
    width, height = next((im["width"], im["height"]) for im in
                         load_json(os.path.join(coco, "annotations", "instances_train2014.json"))["images"]
                         if im["id"] == q["image_id"])
    n = record["num_boxes"]
    assert item["boxes"].shape == (n + 1, 4) and item["box_features"].shape == (n + 1, 2048)
    scale = 240 / min(width, height)
    assert torch.allclose(item["im_info"], torch.tensor([width * scale, height * scale, scale, scale]), atol=1e-3)
    # box 0 is the whole image; its feature is the mean of the file's box features (no image_box_feature here)
    assert torch.allclose(item["boxes"][0], torch.tensor([0, 0, (width - 1) * scale, (height - 1) * scale]), atol=1e-3)
    assert torch.allclose(item["boxes"][1:], torch.from_numpy(record["boxes"]) * scale, atol=1e-3)
    assert torch.allclose(item["box_features"][0], torch.from_numpy(record["features"]).mean(0), atol=1e-5)
    assert torch.equal(item["box_features"][1:], torch.from_numpy(record["features"]))
    assert "image" not in item


def test_soft_targets_equal_the_official_accuracy(vqa_toy_root, vqa_vocab_only_dir):
    ds = make_dataset(vqa_toy_root, vqa_vocab_only_dir)
    coco = os.path.join(vqa_toy_root, "coco")
    anns = {a["question_id"]: a for a in
            load_json(os.path.join(coco, "vqa", "v2_mscoco_train2014_annotations.json"))["annotations"]}
    seen = set()
    for i in range(len(ds)):
        scores = ds[i]["answer_scores"]
        gts = [a["answer"] for a in anns[ds.question_id(i)]["answers"]]
        expected = torch.tensor([0.0 if a == "<unk>" else vqa_accuracy(a, gts) for a in ds.answer_vocab])
        assert torch.allclose(scores, expected, atol=1e-6), ds.question_id(i)
        seen.update(round(float(s), 4) for s in scores if s > 0)
    assert {0.3, 0.6, 0.9, 1.0} <= seen  # the toy world exercises every agreement level


def test_out_of_vocabulary_answers_never_score(tmp_path):
    vocab_file = tmp_path / "answers.txt"
    vocab_file.write_text("<unk>\nred\n\nT-Shirt\n")
    vocab = read_answer_vocab(str(vocab_file), expected_size=3)
    assert vocab == ["<unk>", "red", "t-shirt"]
    index = answer_index(vocab)
    scores = soft_scores(("red",) * 2 + ("t shirt",) * 3 + ("<unk>",) * 4 + ("purple",), index, 3)
    assert scores.tolist() == pytest.approx([0.0, 0.6, 0.9])  # "t shirt" and vocab "t-shirt" normalise alike
    with pytest.raises(VQADataError, match="ANSWER_VOCAB_SIZE is 5"):
        read_answer_vocab(str(vocab_file), expected_size=5)
    vocab_file.write_text("red\n")
    with pytest.raises(VQADataError, match="answers.txt.*<unk>"):
        read_answer_vocab(str(vocab_file))


def test_flip_swaps_left_and_right(vqa_toy_root, vqa_vocab_only_dir):
    plain = make_dataset(vqa_toy_root, vqa_vocab_only_dir)
    flipped = make_dataset(vqa_toy_root, vqa_vocab_only_dir, flip=1.0)
    tok = BertTokenizer.from_pretrained_dir(vqa_vocab_only_dir)
    index = next(i for i, s in enumerate(plain.samples) if " left " in f" {s.question} ")
    a, b = plain[index], flipped[index]
    words = tok.convert_ids_to_tokens(b["question"].tolist())
    assert "right" in words and "left" not in tok.convert_ids_to_tokens(b["question"].tolist())
    expected = tok.convert_ids_to_tokens(a["question"].tolist())
    assert [{"left": "right", "right": "left"}.get(w, w) for w in expected] == words
    width = float(a["im_info"][0])
    assert torch.allclose(b["boxes"][:, 0], width - 1 - a["boxes"][:, 2], atol=1e-4)
    assert torch.allclose(b["boxes"][:, 2], width - 1 - a["boxes"][:, 0], atol=1e-4)
    assert torch.equal(a["answer_scores"], b["answer_scores"])  # the question was swapped, so the answer stands


def test_image_sets_combine_and_test_has_no_answers(vqa_toy_root, vqa_vocab_only_dir):
    train = make_dataset(vqa_toy_root, vqa_vocab_only_dir, "train2014")
    val = make_dataset(vqa_toy_root, vqa_vocab_only_dir, "val2014")
    both = make_dataset(vqa_toy_root, vqa_vocab_only_dir, "train2014+val2014")
    assert len(both) == len(train) + len(val) and both.question_id(len(train)) == val.question_id(0)
    test = make_dataset(vqa_toy_root, vqa_vocab_only_dir, "test2015")
    assert not test.has_answers and "answer_scores" not in test[0]
    with pytest.raises(VQADataError, match="mixes splits"):
        make_dataset(vqa_toy_root, vqa_vocab_only_dir, "val2014+test2015")


def test_end_to_end_items_carry_the_image(vqa_toy_root, vqa_vocab_only_dir):
    ds = make_dataset(vqa_toy_root, vqa_vocab_only_dir, "val2014", precomputed=False)
    item = ds[0]
    assert "box_features" not in item
    assert tuple(item["image"].shape[1:]) == (int(item["im_info"][1]), int(item["im_info"][0]))


# ---- errors name the file and the question id -------------------------------------------------------------
@pytest.fixture
def broken_world(vqa_toy_root, tmp_path):
    """A copy of the toy world's coco/vqa + annotations folders (box files linked) that tests may damage."""
    src, dst = os.path.join(vqa_toy_root, "coco"), tmp_path / "coco"
    dst.mkdir()
    for name in ("vqa", "annotations"):
        shutil.copytree(os.path.join(src, name), dst / name)
    os.symlink(os.path.join(src, "vgbua_res101_precomputed"), dst / "vgbua_res101_precomputed")
    return str(tmp_path)


def edit_json(path: str, change) -> None:
    data = load_json(path)
    change(data)
    with open(path, "w") as f:
        json.dump(data, f)


def test_question_on_a_missing_image(broken_world, vqa_vocab_only_dir):
    q_path = os.path.join(broken_world, "coco", "vqa", "v2_OpenEnded_mscoco_val2014_questions.json")
    qid = load_json(q_path)["questions"][0]["question_id"]  # the first question of its image

    def drop_image(data):
        image_id = qid // 1000
        data["images"] = [im for im in data["images"] if im["id"] != image_id]

    edit_json(os.path.join(broken_world, "coco", "annotations", "instances_val2014.json"), drop_image)
    with pytest.raises(VQADataError, match=rf"val2014_questions.json: question {qid} refers to image"):
        make_dataset(broken_world, vqa_vocab_only_dir, "val2014")


def test_missing_box_file_names_file_and_question(broken_world, vqa_vocab_only_dir, tmp_path):
    coco = os.path.join(broken_world, "coco")
    os.remove(os.path.join(coco, "vgbua_res101_precomputed"))
    folder = os.path.join(coco, "vgbua_res101_precomputed", "trainval2014_resnet101_faster_rcnn_genome")
    os.makedirs(folder)
    ds = make_dataset(broken_world, vqa_vocab_only_dir, "val2014")
    write_box_file(os.path.join(folder, f"{ds.samples[0].image_id}.json"), np.array([[1, 1, 5, 5]], np.float32),
                   features=np.ones((1, 2048), np.float32))
    assert ds[0]["box_features"].shape == (2, 2048)
    missing = next(i for i, s in enumerate(ds.samples) if s.image_id != ds.samples[0].image_id)
    with pytest.raises(VQADataError, match=rf"question {ds.question_id(missing)}: box file .*json"):
        ds[missing]


def test_annotation_and_question_mismatch(broken_world, vqa_vocab_only_dir):
    a_path = os.path.join(broken_world, "coco", "vqa", "v2_mscoco_val2014_annotations.json")
    removed = {}

    def drop_one(data):
        removed["qid"] = data["annotations"].pop(7)["question_id"]

    edit_json(a_path, drop_one)
    with pytest.raises(VQADataError, match=rf"val2014_annotations.json: no annotation for question {removed['qid']}"):
        make_dataset(broken_world, vqa_vocab_only_dir, "val2014")


def test_annotations_in_another_order_still_pair_by_id(broken_world, vqa_vocab_only_dir, vqa_toy_root):
    a_path = os.path.join(broken_world, "coco", "vqa", "v2_mscoco_val2014_annotations.json")
    edit_json(a_path, lambda data: data["annotations"].reverse())
    reordered = make_dataset(broken_world, vqa_vocab_only_dir, "val2014")
    original = make_dataset(vqa_toy_root, vqa_vocab_only_dir, "val2014")
    assert all(torch.equal(reordered[i]["answer_scores"], original[i]["answer_scores"]) for i in range(10))


def test_wrong_structure_names_the_file(broken_world, vqa_vocab_only_dir):
    q_path = os.path.join(broken_world, "coco", "vqa", "v2_OpenEnded_mscoco_val2014_questions.json")
    edit_json(q_path, lambda data: data["questions"][2].pop("question"))
    with pytest.raises(VQADataError, match=r"val2014_questions.json: question \d+ lacks 'question'"):
        make_dataset(broken_world, vqa_vocab_only_dir, "val2014")
    edit_json(q_path, lambda data: data.pop("questions"))
    with pytest.raises(VQADataError, match="val2014_questions.json: expected a JSON object with a 'questions' list"):
        make_dataset(broken_world, vqa_vocab_only_dir, "val2014")


def test_unsupported_options(vqa_toy_root, vqa_vocab_only_dir):
    with pytest.raises(VQADataError, match="USE_IMDB false"):
        make_dataset(vqa_toy_root, vqa_vocab_only_dir, use_imdb=True)
    with pytest.raises(VQADataError, match="unknown VQA image set"):
        make_dataset(vqa_toy_root, vqa_vocab_only_dir, "train2015")
