"""The official VQA accuracy against hand-worked values: each normalisation rule and the leave-one-out mean."""
from __future__ import annotations

import json

import pytest

from vqa.vqa_eval import (
    evaluate,
    leave_one_out_score,
    load_results,
    normalize_answer,
    process_digit_article,
    process_punctuation,
    score_count,
    vqa_accuracy,
)


def by_hand(k: int, n: int = 10) -> float:
    """k of n humans gave the answer: each of the k subsets without a matching human sees k-1 matches."""
    return (k * min(1.0, (k - 1) / 3) + (n - k) * min(1.0, k / 3)) / n if k else 0.0


@pytest.mark.parametrize("k, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_leave_one_out_closed_form(k, expected):
    # k=2: 2 subsets see 1 match (1/3), 8 subsets see 2 matches (2/3) -> (2/3 + 16/3) / 10 = 0.6 exactly
    assert score_count(k) == pytest.approx(expected, abs=1e-12)
    assert score_count(k) == pytest.approx(by_hand(k), abs=1e-12)
    assert vqa_accuracy("red", ["red"] * k + ["blue"] * (10 - k)) == pytest.approx(expected, abs=1e-12)


def test_leave_one_out_other_lengths():
    # 3 answers, 2 match: subsets see (1, 1, 2) matches -> (1/3 + 1/3 + 2/3) / 3
    assert leave_one_out_score([True, True, False]) == pytest.approx(4 / 9)
    assert leave_one_out_score([]) == 0.0


# (gt answers, prediction, accuracy) - the vectors obtained by running the official tool (dataset-formats 2.5)
OFFICIAL_VECTORS = [
    (["yes"] * 10, "Yes", 0.0),  # all 10 agree -> nothing is normalised
    (["yes"] * 10, "yes", 1.0),
    (["2"] * 3 + ["two"] + ["3"] * 6, "two", 1.0),  # number words
    (["red"] + ["blue"] * 9, "red", 0.3),
    (["red"] * 2 + ["blue"] * 8, "red", 0.6),
    (["red"] * 3 + ["blue"] * 7, "red", 0.9),
    (["red"] * 4 + ["blue"] * 6, "red", 1.0),
    (["a dog"] * 2 + ["dog"] * 2 + ["cat"] * 6, "the dog", 1.0),  # articles
    (["t-shirt"] * 5 + ["shirt"] * 5, "t shirt", 1.0),  # '-' becomes a space
    (["don't know"] * 4 + ["no"] * 6, "dont know", 1.0),  # contractions
    (["1,000"] * 4 + ["100"] * 6, "1000", 1.0),  # comma between digits
    (["3.5"] * 4 + ["4"] * 6, "3.5.", 1.0),  # the period rule
]


@pytest.mark.parametrize("gts, prediction, expected", OFFICIAL_VECTORS)
def test_official_vectors(gts, prediction, expected):
    assert vqa_accuracy(prediction, gts) == pytest.approx(expected, abs=1e-12)


def test_punctuation_rules():
    assert process_punctuation("t-shirt") == "t shirt"  # no space next to the mark -> replaced by a space
    assert process_punctuation("yes !") == "yes "  # a space next to the mark -> deleted
    assert process_punctuation("1,000-20") == "100020"  # digit,digit anywhere -> every mark is deleted
    assert process_punctuation("a-2") == "a 2"
    assert process_punctuation("10:30") == "10:30"  # colon is not punctuation here
    assert process_punctuation("it's") == "it's"  # nor is the apostrophe
    assert process_punctuation("3.5.") == "3.5"  # period before a digit survives
    assert process_punctuation("5.") == "5"
    assert process_punctuation("x" + "." * 40) == "x" + "." * 8  # at most 32 periods are removed
    assert process_punctuation("#1") == "#1"  # '#' is not in the set


def test_digit_article_rules():
    assert process_digit_article("None of The  Three") == "0 of 3"
    assert process_digit_article("an apple a day") == "apple day"
    assert process_digit_article("whats up") == "what's up"
    assert process_digit_article("Im here") == "im here"  # the capitalised key can never match
    assert process_digit_article("somebody'd") == "somebodyd"  # the table's odd entry
    assert normalize_answer("\tThe Dog.\n") == "dog"


def test_whitespace_cleaning_always_applies():
    # identical gts skip normalisation, but tabs/newlines and outer spaces are still cleaned on both sides
    assert vqa_accuracy(" yes\n", ["yes"] * 10) == 1.0
    assert vqa_accuracy("yes", ["yes\t"] * 10) == 1.0


def test_evaluate_report_and_coverage(tmp_path):
    anns = [
        {"question_id": 1, "answer_type": "yes/no", "question_type": "is the", "answers": [{"answer": "yes"}] * 10},
        {"question_id": 2, "answer_type": "other", "question_type": "what color",
         "answers": [{"answer": "red"}] * 2 + [{"answer": "blue"}] * 8},
        {"question_id": 3, "answer_type": "other", "question_type": "what color",
         "answers": [{"answer": "red"}] * 3 + [{"answer": "blue"}] * 7},
    ]
    path = tmp_path / "res.json"
    path.write_text(json.dumps([{"question_id": 1, "answer": "yes"}, {"question_id": 2, "answer": "red"},
                                {"question_id": 3, "answer": "red"}]))
    report = evaluate(load_results(str(path)), anns)
    assert report["overall"] == round(100 * (1.0 + 0.6 + 0.9) / 3, 2) == 83.33
    assert report["perAnswerType"] == {"yes/no": 100.0, "other": 75.0}
    assert report["perQuestion"][2] == 60.0
    with pytest.raises(ValueError, match="1 missing"):
        evaluate({1: "yes", 2: "red"}, anns)
    with pytest.raises(ValueError, match="not annotated"):
        evaluate({1: "yes", 2: "red", 3: "x", 4: "y"}, anns)


def test_official_vectors_overall():
    anns = [{"question_id": i, "answers": [{"answer": a} for a in gts]}
            for i, (gts, _, _) in enumerate(OFFICIAL_VECTORS)]
    preds = {i: p for i, (_, p, _) in enumerate(OFFICIAL_VECTORS)}
    assert evaluate(preds, anns)["overall"] == 81.67  # the figure printed by the official tool


def test_load_results_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"question_id": 1}))
    with pytest.raises(ValueError, match="bad.json.*expected a JSON list"):
        load_results(str(bad))
    bad.write_text(json.dumps([{"question_id": 1}]))
    with pytest.raises(ValueError, match="entry 0"):
        load_results(str(bad))
