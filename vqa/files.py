"""Readers of the official VQA v2 json files (questions, annotations, COCO image sizes); every error names the
file and the entry."""
from __future__ import annotations

import json
import os


class VQADataError(ValueError):
    """A VQA file with the wrong structure, or a question that cannot be served; names the file and question id."""


def _load(path: str, list_key: str) -> list:
    if not os.path.isfile(path):
        raise VQADataError(f"file not found: {path}")
    with open(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as err:
            raise VQADataError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get(list_key), list):
        raise VQADataError(f"{path}: expected a JSON object with a '{list_key}' list")
    return data[list_key]


def _field(entry, key: str, kind: type, path: str, where: str):
    if not isinstance(entry, dict) or not isinstance(entry.get(key), kind):
        raise VQADataError(f"{path}: {where} lacks '{key}' of type {kind.__name__}: {str(entry)[:200]}")
    return entry[key]


def read_questions(path: str) -> list[tuple[int, int, str]]:
    """[(question_id, image_id, question)] in file order."""
    out = []
    for i, q in enumerate(_load(path, "questions")):
        qid = _field(q, "question_id", int, path, f"question entry {i}")
        out.append((qid, _field(q, "image_id", int, path, f"question {qid}"),
                    _field(q, "question", str, path, f"question {qid}")))
    return out


def read_annotations(path: str) -> dict[int, tuple[int, tuple[str, ...]]]:
    """question_id -> (image_id, human answers)."""
    out = {}
    for i, ann in enumerate(_load(path, "annotations")):
        qid = _field(ann, "question_id", int, path, f"annotation entry {i}")
        answers = _field(ann, "answers", list, path, f"annotation of question {qid}")
        texts = tuple(_field(a, "answer", str, path, f"an answer of question {qid}") for a in answers)
        if not texts:
            raise VQADataError(f"{path}: annotation of question {qid} has no answers")
        out[qid] = (_field(ann, "image_id", int, path, f"annotation of question {qid}"), texts)
    return out


def read_image_sizes(path: str) -> dict[int, tuple[int, int]]:
    """COCO instances / image_info file -> image_id -> (width, height) (only `images[]` is read)."""
    return {int(_field(im, "id", int, path, "an image")): (int(_field(im, "width", int, path, "an image")),
                                                          int(_field(im, "height", int, path, "an image")))
            for im in _load(path, "images")}
