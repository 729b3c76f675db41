"""Hand-written VCR files (real jsonl + metadata layout) and a tiny VCR config for the VCR tests."""
from __future__ import annotations

import json
import os

import pytest
from PIL import Image

# One image, 4 objects: person, person, horse, diningtable (boxes inside a 64 x 48 image).
OBJECTS = ["person", "person", "horse", "diningtable"]
BOXES = [[2, 2, 20, 40, 0.9], [22, 4, 40, 44, 0.8], [30, 10, 60, 46, 0.7], [10, 30, 50, 47, 0.6]]


def box_polygon(box):
    x1, y1, x2, y2 = box[:4]
    return [[[x1, y1], [x2, y1], [x2, y2], [x1, y2]]]


def vcr_line(n: int, split: str, question, answers, rationales, answer_label=0, rationale_label=0, **extra):
    line = {"annot_id": f"{split}-{n}", "objects": OBJECTS, "img_fn": "movie_a/img0.jpg",
            "metadata_fn": "movie_a/img0.json", "question": question, "answer_choices": answers,
            "rationale_choices": rationales, "movie": "movie_a", "img_id": f"{split}-0", "question_number": n}
    if split != "test":
        line.update(answer_label=answer_label, rationale_label=rationale_label)
    line.update(extra)
    return line


def write_vcr_dir(root: str, lines_by_split: dict[str, list[dict]], boxes=BOXES) -> str:
    """data/vcr layout: {split}.jsonl + vcr1images/movie_a/img0.{jpg,json}."""
    image_dir = os.path.join(root, "vcr1images", "movie_a")
    os.makedirs(image_dir, exist_ok=True)
    Image.new("RGB", (64, 48), (120, 80, 40)).save(os.path.join(image_dir, "img0.jpg"))
    meta = {"boxes": boxes, "segms": [box_polygon(b) for b in boxes], "names": OBJECTS, "width": 64, "height": 48}
    with open(os.path.join(image_dir, "img0.json"), "w") as f:
        json.dump(meta, f)
    for split, lines in lines_by_split.items():
        with open(os.path.join(root, f"{split}.jsonl"), "w") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")
    return root


@pytest.fixture
def vocab_only_dir(vocab_only_bert_dir):
    return vocab_only_bert_dir


def tiny_overrides(bert_dir: str, data_dir: str) -> list[str]:
    """hidden 32, 2 layers, a random ResNet-18, 64-pixel images: a model that runs in well under a second on CPU."""
    return [
        "NETWORK.BERT_MODEL_NAME", bert_dir, "NETWORK.IMAGE_PRETRAINED", "", "DATASET.DATASET_PATH", data_dir,
        "SCALES", "[48, 64]",
        "NETWORK.VLBERT.hidden_size", "32", "NETWORK.VLBERT.visual_size", "32", "NETWORK.IMAGE_FINAL_DIM", "32",
        "NETWORK.VLBERT.num_hidden_layers", "2", "NETWORK.VLBERT.num_attention_heads", "2",
        "NETWORK.VLBERT.intermediate_size", "64", "NUM_WORKERS_PER_GPU", "0",
    ]


def tiny_cfg(bert_dir: str, data_dir: str, *extra: str, yaml_path: str = "cfgs/vcr/toy_q2a_cpu.yaml"):
    """The toy Q2A config shrunk by `tiny_overrides`, plus `extra` KEY VALUE pairs."""
    from common.config import load_config
    from vcr.config import add_vcr_defaults

    return load_config(yaml_path, tiny_overrides(bert_dir, data_dir) + list(extra), add_task_defaults=add_vcr_defaults)


def to_original_keys(state_dict):
    """What the original VCR trainer saved: DDP `module.` prefix, TimeDistributed `vlbert._module.`, and the
    FastRCNN C5 head stored twice (`head.0.*`)."""
    out = {}
    for key, value in state_dict.items():
        new = "vlbert._module." + key[len("vlbert."):] if key.startswith("vlbert.") else key
        out["module." + new] = value
        if key.startswith("image_feature_extractor.roi_head_feature_extractor."):
            twin = key.replace("roi_head_feature_extractor.", "head.0.")
            out["module." + twin] = value
    return out
