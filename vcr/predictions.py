"""VCR result files: the leaderboard CSV (Q->A and QA->R probabilities, merged on annot_id) and Q->AR scoring.

Column order is the leaderboard's: `annot_id, answer_0..3, rationale_conditioned_on_a{i}_{j}` (i, j in 0..3).
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence

import numpy as np

from common.atomic_write import open_atomic
from common.engine.task import Predictions

NUM_CHOICES = 4
ANSWER_COLUMNS = [f"answer_{j}" for j in range(NUM_CHOICES)]
RATIONALE_COLUMNS = [f"rationale_conditioned_on_a{i}_{j}" for i in range(NUM_CHOICES) for j in range(NUM_CHOICES)]
LEADERBOARD_COLUMNS = ["annot_id"] + ANSWER_COLUMNS + RATIONALE_COLUMNS


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed in float64 for stability."""
    shifted = np.asarray(logits, dtype=np.float64)
    shifted = shifted - shifted.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _write_rows(path: str, header: list[str], annot_ids: Sequence[str], values: np.ndarray) -> str:
    if len(annot_ids) != len(values):
        raise ValueError(f"{path}: {len(annot_ids)} annot_ids but {len(values)} rows of scores")
    if len(set(annot_ids)) != len(annot_ids):
        raise ValueError(f"{path}: annot_ids are not unique")
    with open_atomic(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for annot_id, row in zip(annot_ids, values, strict=True):
            writer.writerow([annot_id] + [repr(float(v)) for v in row])
    return path


def write_q2a_csv(path: str, annot_ids: Sequence[str], answer_logits: np.ndarray) -> str:
    """answer_logits [N, 4] -> CSV `annot_id, answer_0..answer_3` (softmax probabilities)."""
    answer_logits = np.asarray(answer_logits)
    if answer_logits.ndim != 2 or answer_logits.shape[1] != NUM_CHOICES:
        raise ValueError(f"{path}: answer logits must be [N, 4], got {answer_logits.shape}")
    return _write_rows(path, ["annot_id"] + ANSWER_COLUMNS, annot_ids, softmax(answer_logits))


def write_qa2r_csv(path: str, annot_ids: Sequence[str], rationale_logits: np.ndarray) -> str:
    """rationale_logits [N, 4 (answer conditioned on), 4 (rationale)] -> 16 probability columns per row."""
    rationale_logits = np.asarray(rationale_logits)
    if rationale_logits.shape[1:] != (NUM_CHOICES, NUM_CHOICES):
        raise ValueError(f"{path}: rationale logits must be [N, 4, 4], got {rationale_logits.shape}")
    probs = softmax(rationale_logits).reshape(len(rationale_logits), -1)
    return _write_rows(path, ["annot_id"] + RATIONALE_COLUMNS, annot_ids, probs)


def prediction_logits(predictions: Predictions) -> tuple[np.ndarray, list[str]]:
    """Logits [rows, 4] (float32, dataset order) and each row's annot_id; a QA2R test set has 4 consecutive rows
    per question, conditioned on answers 0..3 in turn."""
    logits = np.stack([o["label_logits"].numpy() for o in predictions.outputs]).astype(np.float32)
    dataset = predictions.dataset
    return logits, [dataset.record_and_answer(i)[0].annot_id for i in range(len(dataset))]


def write_logits_csv(path_stem: str, task: str, annot_ids: Sequence[str], logits: np.ndarray) -> str:
    """`{path_stem}_Q2A.csv` from [N, 4] answer logits, or `{path_stem}_QA2R.csv` from the [4N, 4] rationale rows."""
    if task == "Q2A":
        return write_q2a_csv(f"{path_stem}_Q2A.csv", annot_ids, logits)
    return write_qa2r_csv(f"{path_stem}_QA2R.csv", annot_ids[::4], np.asarray(logits).reshape(-1, 4, 4))


def write_vcr_predictions(predictions: Predictions, result_dir: str, result_name: str) -> str:
    """`Task.write_predictions` of a test run: `<result_dir>/<result_name>_test_result_{Q2A,QA2R}.csv` (by
    DATASET.TASK)."""
    logits, annot_ids = prediction_logits(predictions)
    stem = os.path.join(result_dir, f"{result_name}_test_result")
    return write_logits_csv(stem, predictions.cfg.DATASET.TASK, annot_ids, logits)


def read_csv_rows(path: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV file; a missing file raises naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"result file not found: {path}")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path}: empty CSV (no header)")
    return rows[0], rows[1:]


def merge_result_csvs(q2a_path: str, qa2r_path: str, out_path: str) -> str:
    """Inner-join the Q2A and QA2R CSVs on annot_id (in the Q2A file's order) into the 21-column leaderboard CSV."""
    a_header, a_rows = read_csv_rows(q2a_path)
    r_header, r_rows = read_csv_rows(qa2r_path)
    if a_header != ["annot_id"] + ANSWER_COLUMNS:
        raise ValueError(f"{q2a_path}: unexpected header {a_header}")
    if r_header != ["annot_id"] + RATIONALE_COLUMNS:
        raise ValueError(f"{qa2r_path}: unexpected header {r_header}")
    rationale_by_id = {row[0]: row[1:] for row in r_rows}
    with open_atomic(out_path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(LEADERBOARD_COLUMNS)
        for row in a_rows:
            if row[0] in rationale_by_id:
                writer.writerow(row + rationale_by_id[row[0]])
    return out_path


def read_vcr_labels(annot_path: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """annot_ids, answer labels [N] and rationale labels [N] of a VCR jsonl file (errors name file and line)."""
    annot_ids, answers, rationales = [], [], []
    with open(annot_path) as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{annot_path}:{line_number}: not a valid JSON line ({err})") from err
            try:
                annot_ids.append(record["annot_id"])
                answers.append(int(record["answer_label"]))
                rationales.append(int(record["rationale_label"]))
            except KeyError as err:
                raise KeyError(f"{annot_path}:{line_number}: missing field {err.args[0]!r}") from err
    return annot_ids, np.asarray(answers, dtype=np.int64), np.asarray(rationales, dtype=np.int64)


def vcr_accuracies(
    answer_logits: np.ndarray, rationale_logits: np.ndarray, answer_labels: np.ndarray, rationale_labels: np.ndarray
) -> dict[str, float]:
    """Q->A, QA->R and Q->AR (both argmaxes right) accuracies from [N, 4] logits and [N] labels."""
    n = len(answer_labels)
    if not (len(answer_logits) == len(rationale_logits) == len(rationale_labels) == n):
        raise ValueError(
            f"length mismatch: {len(answer_logits)} answer rows, {len(rationale_logits)} rationale rows, {n} labels"
        )
    answer_right = np.asarray(answer_logits).argmax(-1) == answer_labels
    rationale_right = np.asarray(rationale_logits).argmax(-1) == rationale_labels
    return {
        "Q->A": float(answer_right.mean()),
        "QA->R": float(rationale_right.mean()),
        "Q->AR": float((answer_right & rationale_right).mean()),
    }
