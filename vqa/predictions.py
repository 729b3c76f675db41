"""The EvalAI result file of VQA v2: a JSON list of {"question_id": int, "answer": str}, one per question."""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

import torch

from common.atomic_write import open_atomic
from common.engine.task import Predictions
from vqa.details import write_vqa_details


def result_file_name(result_name: str, split: str) -> str:
    """`<result-name>_vqa2_<split>.json`, the original's name."""
    return f"{result_name}_vqa2_{split}.json"


def predicted_answers(outputs: Iterable[dict], answer_vocab: Sequence[str], num_items: int) -> list[str]:
    """Per-sample inference outputs (`label_logits` [V], `index`) -> the argmax answer of every item, in order."""
    answers: list[str | None] = [None] * num_items
    for out in outputs:
        index = int(out["index"])
        if not 0 <= index < num_items:
            raise ValueError(f"inference output index {index} outside the dataset (size {num_items})")
        answers[index] = answer_vocab[int(torch.as_tensor(out["label_logits"]).argmax())]
    missing = [i for i, a in enumerate(answers) if a is None]
    if missing:
        raise ValueError(f"inference outputs cover {num_items - len(missing)} of {num_items} questions "
                         f"(first missing index {missing[0]})")
    return answers  # type: ignore[return-value]


def result_records(question_ids: Sequence[int], answers: Sequence[str]) -> list[dict]:
    """[{"question_id": int, "answer": str}]; question ids must be unique."""
    if len(set(question_ids)) != len(question_ids):
        raise ValueError("result_records: duplicate question ids")
    return [{"question_id": int(q), "answer": str(a)} for q, a in zip(question_ids, answers, strict=True)]


def write_result_file(records: list[dict], path: str) -> str:
    """Write the result list as JSON (atomically, folders created); returns the path."""
    with open_atomic(path) as f:
        json.dump(records, f)
    return path


def write_vqa_predictions(predictions: Predictions, result_dir: str, result_name: str) -> str:
    """`Task.write_predictions`: the EvalAI file `<result_dir>/<result_name>_vqa2_<image set>.json`, and beside it
    the per-question details `..._details.jsonl` that `viz/browse.py` shows."""
    dataset = predictions.dataset
    answers = predicted_answers(predictions.outputs, dataset.answer_vocab, len(dataset))
    question_ids = [dataset.question_id(i) for i in range(len(dataset))]
    path = os.path.join(result_dir, result_file_name(result_name, predictions.image_set))
    write_result_file(result_records(question_ids, answers), path)
    write_vqa_details(predictions, path)
    return path
