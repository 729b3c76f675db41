"""VCR result files: leaderboard CSV layout and probabilities, the annot_id join, Q->AR scoring by hand."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from vcr.predictions import (
    LEADERBOARD_COLUMNS,
    merge_result_csvs,
    read_vcr_labels,
    vcr_accuracies,
    write_q2a_csv,
    write_qa2r_csv,
)


def test_leaderboard_columns_in_the_published_order():
    assert len(LEADERBOARD_COLUMNS) == 21
    assert LEADERBOARD_COLUMNS[:6] == ["annot_id", "answer_0", "answer_1", "answer_2", "answer_3",
                                       "rationale_conditioned_on_a0_0"]
    assert LEADERBOARD_COLUMNS[8:10] == ["rationale_conditioned_on_a0_3", "rationale_conditioned_on_a1_0"]
    assert LEADERBOARD_COLUMNS[-1] == "rationale_conditioned_on_a3_3"


def test_written_probabilities_and_inner_join(tmp_path):
    answer_logits = np.array([[0.0, 0.0, 0.0, np.log(5.0)], [1.0, 1.0, 1.0, 1.0]])
    rationale_logits = np.zeros((3, 4, 4))
    rationale_logits[0, 2, 1] = np.log(7.0)  # row 0, conditioned on answer 2: [1, 7, 1, 1] / 10
    q2a = write_q2a_csv(str(tmp_path / "a.csv"), ["test-0", "test-1"], answer_logits)
    qa2r = write_qa2r_csv(str(tmp_path / "r.csv"), ["test-0", "test-9", "test-1"], rationale_logits)
    merged = merge_result_csvs(q2a, qa2r, str(tmp_path / "ar.csv"))
    with open(merged, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["annot_id"] for r in rows] == ["test-0", "test-1"]  # test-9 has no answer row: dropped by the join
    assert list(rows[0]) == LEADERBOARD_COLUMNS
    assert [float(rows[0][f"answer_{j}"]) for j in range(4)] == pytest.approx([0.125, 0.125, 0.125, 0.625])
    assert [float(rows[0][f"rationale_conditioned_on_a2_{j}"]) for j in range(4)] == pytest.approx(
        [0.1, 0.7, 0.1, 0.1])
    assert float(rows[1]["rationale_conditioned_on_a3_3"]) == pytest.approx(0.25)


def test_duplicate_annot_ids_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not unique"):
        write_q2a_csv(str(tmp_path / "a.csv"), ["x", "x"], np.zeros((2, 4)))


def test_q2ar_needs_both_right():
    answer_logits = np.eye(4)[[0, 1, 2, 3]]  # predicts 0, 1, 2, 3
    rationale_logits = np.eye(4)[[3, 1, 0, 0]]  # predicts 3, 1, 0, 0
    scores = vcr_accuracies(answer_logits, rationale_logits, np.array([0, 1, 0, 3]), np.array([3, 0, 0, 0]))
    # answers right: 0, 1, 3; rationales right: 0, 2, 3; both: 0 and 3
    assert scores == {"Q->A": 0.75, "QA->R": 0.75, "Q->AR": 0.5}


def test_labels_are_read_and_missing_ones_named(tmp_path):
    path = tmp_path / "val.jsonl"
    lines = [{"annot_id": "val-0", "answer_label": 2, "rationale_label": 1}, {"annot_id": "val-1", "answer_label": 0}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    with pytest.raises(KeyError, match=r"val\.jsonl:2: missing field 'rationale_label'"):
        read_vcr_labels(str(path))
    path.write_text(json.dumps(lines[0]) + "\n")
    ids, answers, rationales = read_vcr_labels(str(path))
    assert ids == ["val-0"] and answers.tolist() == [2] and rationales.tolist() == [1]
