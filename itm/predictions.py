"""Image-text matching result file: per scored pair, the image, the caption, the 0/1 label and the match
probability, as a JSON list in dataset order."""
from __future__ import annotations

import json
import os

import torch

from common.atomic_write import open_atomic
from common.engine.task import Predictions


def result_file_name(result_name: str, split: str) -> str:
    return f"{result_name}_itm_{split}.json"


def pair_records(predictions: Predictions) -> list[dict]:
    """[{"image", "caption", "label", "score"}] with score = sigmoid(match logit), one per dataset item."""
    dataset = predictions.dataset
    records = []
    for out in predictions.outputs:
        image, caption, label, _ = dataset.pair(out["index"])
        records.append({"image": dataset.source.records[image]["image"], "caption": " ".join(dataset.captions[caption]),
                        "label": int(label), "score": float(torch.sigmoid(out["match_logits"]))})
    return records


def write_itm_predictions(predictions: Predictions, result_dir: str, result_name: str) -> str:
    """`Task.write_predictions`: `<result_dir>/<result_name>_itm_<image set>.json`."""
    path = os.path.join(result_dir, result_file_name(result_name, predictions.image_set))
    with open_atomic(path) as f:
        json.dump(pair_records(predictions), f)
    return path


def match_accuracy(predictions: Predictions) -> float:
    """Share of pairs whose logit sign (> 0: "matches") agrees with the label, as the `MatchAcc` metric."""
    dataset = predictions.dataset
    hits = [(float(out["match_logits"]) > 0) == (dataset.pair(out["index"])[2] == 1) for out in predictions.outputs]
    return sum(hits) / max(len(hits), 1)
