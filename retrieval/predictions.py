"""Retrieval result file: `<result_name>_retrieval_<image set>.json` with the metrics, the settings, and per query
the ten best candidates (caption queries list image ids, image queries list sentence ids) with their scores."""
from __future__ import annotations

import json
import os

import torch
from torch import Tensor

from common.atomic_write import open_atomic
from retrieval.dataset import KarpathySplit

TOP_LISTED = 10


def result_file_name(result_name: str, image_set: str) -> str:
    return f"{result_name}_retrieval_{image_set}.json"


def _best(scores: Tensor) -> tuple[list[list[int]], list[list[float]]]:
    """Per row, the TOP_LISTED best columns (a stable sort: ties keep the lower index first) and their scores;
    columns that were never scored (-inf) are left out."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :TOP_LISTED]
    values = scores.gather(1, order)
    keep = torch.isfinite(values)
    return ([row[m].tolist() for row, m in zip(order, keep, strict=True)],
            [[round(v, 6) for v in row[m].tolist()] for row, m in zip(values, keep, strict=True)])


def write_retrieval_result(result_dir: str, result_name: str, image_set: str, split: KarpathySplit,
                           metrics: dict[str, float], scores_i2t: Tensor, scores_t2i: Tensor, settings: dict) -> str:
    """Write the result JSON atomically; returns its path."""
    image_ids = [image.image_id for image in split.images]
    t2i_order, t2i_scores = _best(scores_t2i)
    i2t_order, i2t_scores = _best(scores_i2t)
    document = {
        "image_set": image_set, "annotation_file": split.annotation_path, "metrics": metrics, **settings,
        "num_images": len(split.images), "num_texts": len(split.texts),
        "text_to_image": [{"sentid": split.sentids[t], "text": split.texts[t],
                           "image_id": image_ids[split.text_image[t]],
                           "retrieved": [image_ids[i] for i in t2i_order[t]], "scores": t2i_scores[t]}
                          for t in range(len(split.texts))],
        "image_to_text": [{"image_id": image_ids[i], "filename": split.images[i].relative_path,
                           "retrieved": [split.sentids[t] for t in i2t_order[i]], "scores": i2t_scores[i]}
                          for i in range(len(split.images))],
    }
    path = os.path.join(result_dir, result_file_name(result_name, image_set))
    with open_atomic(path) as f:
        json.dump(document, f)
    return path
