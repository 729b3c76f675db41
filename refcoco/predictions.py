"""RefCOCO+ result files and accuracy: one `{"ref_id", "box": [x1, y1, x2, y2]}` per expression, scored against
the referred annotation's box.

Accuracy follows the original evaluation (`refcoco/function/test.py`): the referred box is `getRefBox` as
[x, y, x + w, y + h], IoU counts areas as (x2 - x1 + 1)(y2 - y1 + 1) (the +1-pixel convention), and a prediction
is correct when IoU >= 0.5. Keeping the original's convention keeps our numbers comparable with its reported
ones; the refer toolkit's own `computeIoU` (x2 = x + w - 1) differs from it by at most about one pixel.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from common.atomic_write import open_atomic
from common.data.boxes import paired_iou_plus_one, xywh_to_xyxy
from common.engine.task import Predictions
from refcoco.details import write_refcoco_details

log = logging.getLogger(__name__)

CORRECT_IOU = 0.5  # correct when IoU >= 0.5


def collect_pred_boxes(outputs: Iterable[dict], num_items: int) -> np.ndarray:
    """Per-batch output dicts with `pred_boxes` [b, 4] and `index` [b] -> [num_items, 4] in dataset order."""
    boxes = np.full((num_items, 4), np.nan, dtype=np.float64)
    for out in outputs:
        index = torch.as_tensor(out["index"]).view(-1).cpu().numpy()
        boxes[index] = torch.as_tensor(out["pred_boxes"]).detach().double().cpu().view(-1, 4).numpy()
    missing = np.isnan(boxes).any(1)
    if missing.any():
        raise ValueError(f"inference outputs cover {num_items - int(missing.sum())} of {num_items} expressions "
                         f"(first missing index {int(missing.argmax())})")
    return boxes


def prediction_records(ref_ids: Sequence[int], boxes: np.ndarray) -> list[dict]:
    """[{"ref_id": int, "box": [x1, y1, x2, y2]}], one per expression (ref ids repeat)."""
    return [{"ref_id": int(r), "box": [float(v) for v in b]} for r, b in zip(ref_ids, boxes, strict=True)]


def write_predictions_json(records: list[dict], path: str) -> str:
    """Write the result list as JSON (atomically, folders created); returns the path."""
    with open_atomic(path) as f:
        json.dump(records, f)
    return path


def result_file_name(result_name: str, split: str) -> str:
    """`<result-name>_refcoco+_<split>.json`, the original's name."""
    return f"{result_name}_refcoco+_{split}.json"


def grounding_hits(pred_boxes, gt_boxes) -> torch.Tensor:
    """[N] bool: IoU(pred, gt) >= 0.5 (+1 convention) row by row; both [N, 4] xyxy."""
    return paired_iou_plus_one(pred_boxes, gt_boxes) >= CORRECT_IOU


def accuracy_against_refer(records: list[dict], refer) -> float:
    """Fraction of result records whose box hits the ref's `getRefBox` (converted with x2 = x + w)."""
    if not records:
        raise ValueError("accuracy_against_refer: no predictions")
    gt = torch.cat([xywh_to_xyxy(refer.get_ref_box(r["ref_id"])) for r in records])
    return float(grounding_hits([r["box"] for r in records], gt).double().mean())


def records_of(predictions: Predictions) -> list[dict]:
    """The result records of a run: one {"ref_id", "box"} per expression, in dataset order."""
    dataset = predictions.dataset
    boxes = collect_pred_boxes(predictions.outputs, len(dataset))
    return prediction_records([s.ref_id for s in dataset.samples], boxes)


def write_refcoco_predictions(predictions: Predictions, result_dir: str, result_name: str) -> str:
    """`Task.write_predictions`: the result JSON `<result_dir>/<result_name>_refcoco+_<image set>.json`, and beside
    it the per-expression details `..._details.jsonl` that `viz/browse.py` shows."""
    path = os.path.join(result_dir, result_file_name(result_name, predictions.image_set))
    records = records_of(predictions)
    write_predictions_json(records, path)
    refer = predictions.dataset.refer
    truth = torch.cat([xywh_to_xyxy(refer.get_ref_box(r["ref_id"])) for r in records])
    write_refcoco_details(predictions, path, records, grounding_hits([r["box"] for r in records], truth).tolist())
    return path


def report_accuracy(predictions: Predictions, path: str) -> float:
    """The original evaluation's accuracy of a run (logged with the file it wrote); the labels of every RefCOCO+
    split are public."""
    records = records_of(predictions)
    accuracy = accuracy_against_refer(records, predictions.dataset.refer)
    log.info("RefCOCO+ %s: accuracy %.4f over %d expressions (boxes %s); wrote %s", predictions.image_set, accuracy,
             len(records), predictions.cfg.DATASET.TEST_BOXES, path)
    return accuracy
