"""`data/check.py --all` on damaged copies of the toy world: it reads every file the config reads (not a sample), in
worker processes with a progress bar, and lists every problem in one run with exit status 1. Each fault is one the
sampled check (or the check before) let through: a random-bytes refs(unc).p, NaN features in a box file, a
truncated image, broken jsonl lines, metadata with too few boxes; and a precomputed-feature VQA config does not
need the COCO images it never opens."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from common.config import load_config
from common.data.box_files import encode_array, read_box_file
from common.data.captions import folder_path
from common.data.preflight import check_data
from data import check as check_script
from refcoco.refer import load_refs_pickle

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def world(small_world_root, tmp_path) -> str:
    """A copy of the small toy world that a test may damage."""
    shutil.copytree(small_world_root, tmp_path / "world", ignore=shutil.ignore_patterns("*.zip", "train2017"))
    return str(tmp_path / "world")


def problems_of(argv: list[str], caplog) -> tuple[int, list[str]]:
    """Exit status and problem lines of an in-process `data/check.py` run."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="data.check"):
        status = check_script.main(argv)
    return status, [line[4:] for line in caplog.text.splitlines() if line.startswith("  - ")]


def truncate(path: str) -> str:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 3)
    return path


def nan_features(path: str) -> str:
    """Rewrite a box file with one NaN in its features (every other field kept byte for byte)."""
    with open(path) as f:
        record = json.load(f)
    features = read_box_file(path)["features"].copy()
    features[-1, 7] = np.nan
    record["features"] = encode_array(features)
    with open(path, "w") as f:
        json.dump(record, f)
    return path


def vqa_args(world: str, bert: str, *extra: str) -> list[str]:
    coco = os.path.join(world, "coco")
    return ["--cfg", os.path.join(ROOT, "cfgs/vqa/toy_cpu.yaml"), *extra, "DATASET.DATASET_PATH", coco,
            "DATASET.ANSWER_VOCAB_FILE", os.path.join(coco, "vqa", "answers_vqa.txt"), "NETWORK.BERT_MODEL_NAME", bert]


def last_question_image(coco: str, image_set: str) -> int:
    with open(os.path.join(coco, "vqa", f"v2_OpenEnded_mscoco_{image_set}_questions.json")) as f:
        return max(q["image_id"] for q in json.load(f)["questions"])


def test_vqa_precomputed_nan_features_found_only_by_all_and_images_not_needed(world, minilm_dir, caplog):
    coco = os.path.join(world, "coco")
    image_id = last_question_image(coco, "val2014")  # never in a 1-file sample (the first image)
    box_file = nan_features(os.path.join(coco, "vgbua_res101_precomputed", "trainval2014_resnet101_faster_rcnn_genome",
                                         f"{image_id}.json"))
    shutil.rmtree(os.path.join(coco, "train2014"))  # the precomputed run never opens an image
    assert problems_of(vqa_args(world, minilm_dir, "--samples", "1"), caplog) == (0, [])
    status, problems = problems_of(vqa_args(world, minilm_dir, "--all", "--workers", "2"), caplog)
    assert status == 1 and len(problems) == 1, problems
    assert problems[0].startswith(f"box file does not read: {box_file} ({box_file}: field 'features' holds 1 "
                                  f"NaN/inf value(s)")
    assert problems[0].endswith("(config DATASET.DATASET_PATH + DATASET.BOXES)")


def refcoco_args(world: str, bert: str) -> list[str]:
    return ["--cfg", os.path.join(ROOT, "cfgs/refcoco/toy_cpu.yaml"), "--all", "--workers", "2",
            "DATASET.DATASET_PATH", os.path.join(world, "coco"), "NETWORK.BERT_MODEL_NAME", bert,
            "NETWORK.IMAGE_PRETRAINED", ""]


def test_refcoco_random_bytes_refs_pickle_then_a_truncated_image(world, minilm_dir, caplog):
    refs = os.path.join(world, "coco", "refcoco+", "refs(unc).p")
    intact = open(refs, "rb").read()
    with open(refs, "wb") as f:
        f.write(np.random.default_rng(0).bytes(len(intact)))
    status, problems = problems_of(refcoco_args(world, minilm_dir), caplog)
    assert status == 1 and len(problems) == 1 and problems[0].startswith(f"{refs}: not a readable refs pickle")
    with open(refs, "wb") as f:
        f.write(intact)
    image_ids = sorted({ref["image_id"] for ref in load_refs_pickle(refs)})
    image = truncate(os.path.join(world, "coco", "train2014", f"COCO_train2014_{image_ids[-1]:012d}.jpg"))
    status, problems = problems_of(refcoco_args(world, minilm_dir), caplog)
    assert status == 1 and len(problems) == 1 and problems[0].startswith(f"image does not open: {image} ")


def vcr_damage(world: str) -> tuple[str, list[str]]:
    """Three faults in the toy VCR files; returns the data folder and the problem each must give (a prefix)."""
    vcr = os.path.join(world, "vcr")
    train = os.path.join(vcr, "train.jsonl")
    lines = open(train).read().splitlines()
    lines[2] = lines[2][: len(lines[2]) // 2]
    with open(train, "w") as f:
        f.write("\n".join(lines) + "\n")
    val = [json.loads(line) for line in open(os.path.join(vcr, "val.jsonl"))]
    image = truncate(os.path.join(vcr, "vcr1images", val[-1]["img_fn"]))
    meta_path = os.path.join(vcr, "vcr1images", val[0]["metadata_fn"])
    meta = json.load(open(meta_path))
    meta["boxes"] = meta["boxes"][:1]
    json.dump(meta, open(meta_path, "w"))
    return vcr, [f"{train}:3: not valid JSON", f"image does not open: {image} ", f"{meta_path}: 1 boxes and "]


def vcr_args(vcr: str, bert: str) -> list[str]:
    return ["DATASET.DATASET_PATH", vcr, "NETWORK.BERT_MODEL_NAME", bert, "NETWORK.IMAGE_PRETRAINED", ""]


def test_vcr_every_problem_in_one_list_and_the_same_with_one_or_two_workers(world, minilm_dir, caplog):
    vcr, expected = vcr_damage(world)
    cfg_path = os.path.join(ROOT, "cfgs/vcr/toy_q2a_cpu.yaml")
    status, problems = problems_of(["--cfg", cfg_path, "--all", "--workers", "2", *vcr_args(vcr, minilm_dir)],
                                   caplog)
    assert status == 1 and len(problems) == 3, problems
    for prefix in expected:
        assert sum(p.startswith(prefix) for p in problems) == 1, (prefix, problems)
    from vcr.task import TASK

    cfg = load_config(cfg_path, vcr_args(vcr, minilm_dir), add_task_defaults=TASK.add_defaults)
    assert check_data(cfg, TASK, samples=None, workers=1) == check_data(cfg, TASK, samples=None, workers=2)


def test_itm_broken_lines_and_nan_features(world, minilm_dir, caplog):
    cc = os.path.join(world, "conceptual-captions")
    index = os.path.join(cc, "val_frcnn.json")
    rows = open(index).read().splitlines()
    box_file = nan_features(os.path.join(cc, folder_path(json.loads(rows[-1])["frcnn"])))
    rows[1], rows[3] = "{not json", rows[3][:-2]
    with open(index, "w") as f:
        f.write("\n".join(rows) + "\n")
    status, problems = problems_of(["--cfg", os.path.join(ROOT, "cfgs/itm/toy_cpu.yaml"), "--all",
                                    "DATASET.DATASET_PATH", cc, "NETWORK.BERT_MODEL_NAME", minilm_dir], caplog)
    assert status == 1 and len(problems) == 3, problems
    assert problems[0].startswith(f"{index}:2: not valid JSON") and problems[1].startswith(f"{index}:4: not valid")
    assert problems[2].startswith(f"box file does not read: {box_file} ") and "'features' holds 1 NaN" in problems[2]


def test_the_script_shows_progress_and_says_every_file(small_world_root, minilm_dir):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "data", "check.py"),
                             *vqa_args(small_world_root, minilm_dir, "--all", "--workers", "2")],
                            capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr
    assert "data check: 100%" in result.stderr and "data check passed" in result.stderr
    assert "(vqa, every file)" in result.stderr


def test_pretrain_nan_features_and_an_unreadable_corpus_without_the_images(world, minilm_dir, caplog):
    cc, corpus = os.path.join(world, "conceptual-captions"), os.path.join(world, "en_corpus")
    rows = open(os.path.join(cc, "train_frcnn.json")).read().splitlines()
    box_file = nan_features(os.path.join(cc, folder_path(json.loads(rows[-1])["frcnn"])))
    shutil.rmtree(os.path.join(cc, "train_image"))  # precomputed: never opened
    with open(os.path.join(corpus, "wiki.doc"), "ab") as f:
        f.write(b"\xff\xfe broken\n")
    args = ["--cfg", os.path.join(ROOT, "cfgs/pretrain/toy_cpu.yaml"), "--all", "DATASET.0.DATASET_PATH", cc,
            "NETWORK.BERT_MODEL_NAME", minilm_dir, "DATASET.1.TRAIN_ANNOTATION_FILE",
            f"{corpus}/bc1g.doc+{corpus}/wiki.doc", "DATASET.1.VAL_ANNOTATION_FILE", f"{corpus}/bc1g.doc",
            "DATASET.1.TEST_ANNOTATION_FILE", f"{corpus}/bc1g.doc"]
    status, problems = problems_of(args, caplog)
    assert status == 1 and len(problems) == 2, problems
    assert problems[0].startswith(f"box file does not read: {box_file} ") and "'features' holds 1 NaN" in problems[0]
    assert problems[1].startswith(f"{corpus}/wiki.doc: not readable UTF-8 text")
