"""Per-question details of a VCR evaluation for `viz/browse.py` (`common/engine/details.py`): the image with its
objects' boxes, the question, the four answers with the Q->A model's probabilities, the rationales with the QA->R
model's (conditioned on the true answer for val, on the predicted one for test) and, for val, the truth.
`correct` is Q->A; `q2ar_correct` needs the rationale right too. Object mentions read "name (box number)"."""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from common.data.image_io import read_json
from common.engine.details import rounded_boxes, top_scores, write_details
from vcr.dataset import read_vcr_jsonl
from vcr.predictions import softmax
from vcr.text import object_word


def render(tokens: list, objects: Sequence[str]) -> str:
    """A VCR token list as text; an object list becomes "Casey (1) and horse (3)" (1-based box numbers)."""
    words = [token if isinstance(token, str) else
             " and ".join(f"{object_word(int(i), objects)} ({int(i) + 1})" for i in token) for token in tokens]
    return " ".join(words)


def image_facts(image_root: str, record) -> tuple[list[list[float]], list[int]]:
    """The objects' boxes (original pixels) and the image size (metadata width/height, else the image header)."""
    meta = read_json(os.path.join(image_root, record.metadata_fn))
    boxes = rounded_boxes(np.asarray(meta["boxes"], dtype=np.float32).reshape(-1, 5)[: len(record.objects)])
    if "width" in meta and "height" in meta:
        return boxes, [int(meta["width"]), int(meta["height"])]
    with Image.open(os.path.join(image_root, record.img_fn)) as image:
        return boxes, list(image.size)


def question_record(record, index: int, split: str, image_root: str, answer_logits: np.ndarray,
                    rationale_logits: np.ndarray) -> dict:
    """answer_logits [4]; rationale_logits [4] (conditioned on one answer)."""
    answers = [render(a, record.objects) for a in record.answer_choices]
    rationales = [render(r, record.objects) for r in record.rationale_choices]
    top = top_scores(softmax(answer_logits).tolist(), answers, k=4)
    rationale_top = top_scores(softmax(rationale_logits).tolist(), rationales, k=4)
    boxes, size = image_facts(image_root, record)
    question = render(record.question, record.objects)
    out = {"task": "vcr", "split": split, "index": index, "id": record.annot_id,
           "image": os.path.abspath(os.path.join(image_root, record.img_fn)), "image_size": size, "boxes": boxes,
           "box_labels": [f"{object_word(i, record.objects)} ({i + 1})" for i in range(len(boxes))],
           "whole_image_box": False, "text": question, "type": question.split(" ")[0].lower(), "top": top,
           "prediction": top[0][0], "rationales": rationale_top, "truth": None, "correct": None, "score": None}
    if record.answer_label >= 0:
        answer_right = int(np.argmax(answer_logits)) == record.answer_label
        rationale_right = int(np.argmax(rationale_logits)) == record.rationale_label
        out.update(truth=answers[record.answer_label], truth_rationale=rationales[record.rationale_label],
                   correct=answer_right, q2ar_correct=answer_right and rationale_right)
    return out


def write_vcr_details(path: str, annot_path: str, image_root: str, split: str, answer_logits: np.ndarray,
                      rationale_logits: np.ndarray, annot_ids: list[str]) -> str:
    """Details of the questions `annot_ids` (the order of answer_logits [N, 4]); rationale_logits [N, 4] (val: one
    row per question, conditioned on the true answer) or [N, 4, 4] (test: per conditioning answer)."""
    records = {r.annot_id: r for r in read_vcr_jsonl(annot_path, test_mode=split == "test")}
    rationale_logits = np.asarray(rationale_logits)

    def rows():
        for n, annot_id in enumerate(annot_ids):
            answers = np.asarray(answer_logits[n])
            rationale = rationale_logits[n]
            if rationale.ndim == 2:  # test: the rationales conditioned on the predicted answer
                rationale = rationale[int(answers.argmax())]
            yield question_record(records[annot_id], n, split, image_root, answers, rationale)

    return write_details(path, rows())
