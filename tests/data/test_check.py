"""Pre-flight data check on the toy world: intact passes; a deleted image, an emptied box file and a wrong answer
vocabulary size are all reported, by name, in one run; each task's own check (`Task.check_data`) is what runs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from common.data.preflight import check_data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("toy"))
    subprocess.run([sys.executable, os.path.join(ROOT, "data", "make_toy_data.py"), "--root", root, "--seed", "0",
                    "--size", "small"], check=True, capture_output=True)
    return root

def run_check(toy: str, bert: str, *extra: str) -> subprocess.CompletedProcess:
    coco = os.path.join(toy, "coco")
    cmd = [sys.executable, os.path.join(ROOT, "data", "check.py"), "--cfg", os.path.join(ROOT, "cfgs/vqa/toy_cpu.yaml"),
           "DATASET.DATASET_PATH", coco, "DATASET.ANSWER_VOCAB_FILE", os.path.join(coco, "vqa", "answers_vqa.txt"),
           "NETWORK.BERT_MODEL_NAME", bert, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)

def first_image_id(coco: str, image_set: str) -> int:
    with open(os.path.join(coco, "vqa", f"v2_OpenEnded_mscoco_{image_set}_questions.json")) as f:
        return min(q["image_id"] for q in json.load(f)["questions"])  # the deterministic sample always holds it

def test_intact_world_passes(toy_root, minilm_dir):
    result = run_check(toy_root, minilm_dir)
    assert result.returncode == 0, result.stderr
    assert "passed" in result.stderr

def test_three_faults_reported_in_one_run(toy_root, minilm_dir, tmp_path):
    broken = tmp_path / "world"

    shutil.copytree(os.path.join(toy_root, "coco"), broken / "coco")
    coco = str(broken / "coco")
    train_id, val_id = first_image_id(coco, "train2014"), first_image_id(coco, "val2014")
    image = os.path.join(coco, "train2014", f"COCO_train2014_{train_id:012d}.jpg")
    box_file = os.path.join(coco, "vgbua_res101_precomputed", "trainval2014_resnet101_faster_rcnn_genome",
                            f"{val_id}.json")
    os.remove(image)
    open(box_file, "w").close()
    with open(os.path.join(coco, "vqa", "answers_vqa.txt")) as f:
        true_size = sum(1 for line in f if line.strip())

    # end to end, so that the images are read (a precomputed-feature run never opens them)
    result = run_check(str(broken), minilm_dir, "DATASET.ANSWER_VOCAB_SIZE", str(true_size + 3),
                       "NETWORK.IMAGE_FEAT_PRECOMPUTED", "false")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert len(lines) == 3, result.stderr
    assert any("image not found" in line and image in line and "DATASET.TRAIN_IMAGE_SET" in line for line in lines)
    assert any(box_file in line and "DATASET.BOXES" in line for line in lines)
    assert any(f"{true_size} answers but DATASET.ANSWER_VOCAB_SIZE is {true_size + 3}" in line for line in lines)


@pytest.mark.parametrize("layout", ["file", "prefix"])
def test_image_pretrained_is_found_as_the_model_loads_it(tmp_path, layout):
    """NETWORK.IMAGE_PRETRAINED names a weights file, or the original's prefix of `<prefix>-<epoch:04d>.model`."""
    from common.config import get_default_config
    from common.data.preflight import Problems, check_network

    weights = tmp_path / ("resnet18-toy.pth" if layout == "file" else "resnet18-0003.model")
    key = str(weights) if layout == "file" else str(tmp_path / "resnet18")
    cfg = get_default_config()
    cfg.NETWORK.update(IMAGE_FEAT_PRECOMPUTED=False, IMAGE_PRETRAINED=key, IMAGE_PRETRAINED_EPOCH=3)
    problems = Problems()
    check_network(cfg, problems, bert_folder=False)
    assert len(problems) == 1 and "NETWORK.IMAGE_PRETRAINED" in problems[0] and str(weights) in problems[0]
    weights.write_bytes(b"")
    problems = Problems()
    check_network(cfg, problems, bert_folder=False)
    assert problems == []


def test_pretrain_accepts_an_image_without_detections_vqa_does_not(small_world_root, minilm_dir, tmp_path):
    """A Conceptual Captions box file with 0 boxes trains (caption only), so pre-flight lets it pass; a VQA box
    file with 0 boxes is still reported."""
    from common.config import load_config
    from common.data.box_files import encode_array
    from common.data.captions import folder_path
    from common.data.preflight import Problems
    from pretrain.check import check_pretrain_data
    from pretrain.task import TASK

    cc = str(tmp_path / "cc")
    shutil.copytree(os.path.join(small_world_root, "conceptual-captions"), cc)
    with open(os.path.join(cc, "train_frcnn.json")) as f:
        first = json.loads(f.readline())
    emptied = os.path.join(cc, folder_path(first["frcnn"]))
    with open(emptied) as f:
        record = json.load(f)
    record.update(num_boxes=0, boxes=encode_array(np.zeros((0, 4))), classes="", features="")
    with open(emptied, "w") as f:
        json.dump(record, f)
    corpus = os.path.join(small_world_root, "en_corpus", "bc1g.doc")
    cfg = load_config(os.path.join(ROOT, "cfgs", "pretrain", "toy_cpu.yaml"),
                      ["DATASET.0.DATASET_PATH", cc, "NETWORK.BERT_MODEL_NAME", minilm_dir,
                       "DATASET.1.TRAIN_ANNOTATION_FILE", corpus, "DATASET.1.VAL_ANNOTATION_FILE", corpus,
                       "DATASET.1.TEST_ANNOTATION_FILE", corpus], add_task_defaults=TASK.add_defaults)
    problems = Problems()
    check_pretrain_data(cfg, problems, 10_000, ("TRAIN", "VAL", "TEST"))
    assert problems == []
    problems.box_file(emptied, "DATASET.DATASET_PATH")  # the strict check the VQA and RefCOCO+ files get
    assert problems == [f"box file is empty (0 boxes): {emptied} (config DATASET.DATASET_PATH)"]


def test_itm_has_its_own_check(small_world_root, minilm_dir, tmp_path):
    """data/check.py asks the task: the intact toy Conceptual Captions pass for itm/, and a box file without the
    precomputed features image-text matching reads is reported by name."""
    from common.config import load_config
    from common.data.captions import folder_path
    from data import check as check_script
    from itm.task import TASK

    cc = str(tmp_path / "cc")
    shutil.copytree(os.path.join(small_world_root, "conceptual-captions"), cc)
    cfg_path = os.path.join(ROOT, "cfgs", "itm", "toy_cpu.yaml")
    overrides = ["DATASET.DATASET_PATH", cc, "NETWORK.BERT_MODEL_NAME", minilm_dir]
    assert check_script.main(["--cfg", cfg_path, "--samples", "10000", *overrides]) == 0
    with open(os.path.join(cc, "val_frcnn.json")) as f:
        stripped = os.path.join(cc, folder_path(json.loads(f.readline())["frcnn"]))
    with open(stripped) as f:
        record = json.load(f)
    del record["features"]
    with open(stripped, "w") as f:
        json.dump(record, f)
    cfg = load_config(cfg_path, overrides, add_task_defaults=TASK.add_defaults)
    assert check_data(cfg, TASK, samples=10_000) == [
        f"box file {stripped} lacks ['features']: image-text matching reads precomputed features "
        f"(config DATASET.DATASET_PATH)"]
    assert check_script.main(["--cfg", cfg_path, "--samples", "10000", *overrides]) == 1
