"""Per-question details of a VQA run for `viz/browse.py` (`common/engine/details.py`): the image and its boxes,
the question, the five best answers with their sigmoid scores, and, with annotations, the humans' most common
answer, the question and answer types and the official accuracy of the prediction (`correct`: full credit)."""
from __future__ import annotations

import functools
import json
import os
from collections import Counter

import torch

from common.data.box_files import read_box_file
from common.engine.details import details_path, rounded_boxes, top_scores, write_details
from common.engine.task import Predictions
from vqa.dataset import IMAGE_SETS, VQADataset
from vqa.vqa_eval import vqa_accuracy


def annotation_types(dataset: VQADataset) -> dict[int, dict]:
    """question_id -> {question_type, answer_type} from the annotation files of the annotated image sets."""
    types: dict[int, dict] = {}
    for name in dataset.image_sets:
        path = os.path.join(dataset.data_path, "vqa", f"v2_mscoco_{name}_annotations.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                for ann in json.load(f)["annotations"]:
                    types[int(ann["question_id"])] = {"question_type": ann.get("question_type", ""),
                                                      "answer_type": ann.get("answer_type", "")}
    return types


def question_record(dataset: VQADataset, index: int, logits: torch.Tensor, types: dict[int, dict],
                    boxes_of) -> dict:
    sample = dataset.samples[index]
    width, height = dataset.image_sizes[IMAGE_SETS[sample.image_set][0]][sample.image_id]
    top = top_scores(torch.sigmoid(logits).tolist(), dataset.answer_vocab)
    record = {"task": "vqa", "split": sample.image_set, "index": index, "id": sample.question_id,
              "image": os.path.abspath(dataset.image_path(sample)), "image_size": [width, height],
              "boxes": boxes_of(sample), "whole_image_box": False, "text": sample.question,
              "top": top, "prediction": top[0][0], "truth": None, "correct": None, "score": None}
    if sample.answers is not None:
        kind = types.get(sample.question_id, {})
        score = vqa_accuracy(top[0][0], sample.answers)
        record.update(truth=Counter(sample.answers).most_common(1)[0][0], answers=list(sample.answers),
                      score=round(score, 4), correct=score >= 1.0, type=kind.get("question_type", ""),
                      answer_type=kind.get("answer_type", ""))
    else:
        record.update(type=sample.question.split(" ")[0].lower() if sample.question else "", answer_type="")
    return record


def write_vqa_details(predictions: Predictions, result_path: str) -> str:
    """`<result file stem>_details.jsonl` beside the EvalAI file; box files are read once per image."""
    dataset = predictions.dataset

    @functools.lru_cache(maxsize=4096)
    def boxes_by_file(path: str) -> tuple:
        return tuple(map(tuple, rounded_boxes(read_box_file(path, fields=("boxes",), feature_dim=None)["boxes"])))

    def boxes_of(sample) -> list:
        return [list(b) for b in boxes_by_file(dataset.box_file_path(sample))]

    types = annotation_types(dataset)
    records = (question_record(dataset, out["index"], out["label_logits"], types, boxes_of)
               for out in predictions.outputs)
    return write_details(details_path(result_path), records)
