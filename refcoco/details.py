"""Per-expression details of a RefCOCO+ run for `viz/browse.py` (`common/engine/details.py`): the image with every
candidate box the model scored (box 0 the whole image when DATASET.ADD_IMAGE_AS_A_BOX), the expression, the five
best boxes with their sigmoid scores, the predicted and the referred box, and `correct` as the accuracy counts it
(IoU >= 0.5, +1-pixel areas). `type` is the referred object's category."""
from __future__ import annotations

import os

import torch

from common.data.transforms import prepend_whole_image_box
from common.engine.details import details_path, rounded_boxes, top_scores, write_details
from common.engine.task import Predictions
from refcoco.dataset import image_path


def expression_record(dataset, split: str, index: int, logits: torch.Tensor, record: dict, correct: bool) -> dict:
    sample = dataset.samples[index]
    width, height = dataset.refer.image_size(sample.image_id)
    boxes = dataset.candidate_boxes(sample.image_id)
    if dataset.add_image_as_a_box:
        boxes = prepend_whole_image_box(boxes, width, height)
    scores = torch.sigmoid(logits[: len(boxes)]).tolist()
    top = top_scores(scores, [f"box {i}" for i in range(len(boxes))])
    ref = dataset.refer.ref(sample.ref_id)
    return {"task": "refcoco", "split": split, "index": index, "id": f"{sample.ref_id}/{sample.sent_id}",
            "image": os.path.abspath(image_path(dataset.data_path, sample.image_id, dataset.zip_mode)),
            "image_size": [width, height], "boxes": rounded_boxes(boxes.tolist()),
            "whole_image_box": bool(dataset.add_image_as_a_box), "text": " ".join(sample.tokens),
            "type": dataset.refer.coco.cats[ref["category_id"]]["name"], "top": top, "prediction": top[0][0],
            "top_boxes": [int(label.split(" ")[1]) for label, _ in top], "pred_box": rounded_boxes([record["box"]])[0],
            "truth": "referred box", "truth_box": rounded_boxes([sample.gt_box])[0], "correct": bool(correct),
            "score": None}


def write_refcoco_details(predictions: Predictions, result_path: str, records: list[dict], hits: list[bool]) -> str:
    """`<result file stem>_details.jsonl` beside the result JSON; `records` and `hits` are the result file's rows
    and their correctness, in dataset order."""
    rows = (expression_record(predictions.dataset, predictions.image_set, out["index"], out["logits"],
                              records[out["index"]], hits[out["index"]]) for out in predictions.outputs)
    return write_details(details_path(result_path), rows)
