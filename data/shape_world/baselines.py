"""Blind and trivial baselines of the toy world, written to `<root>/baselines.json`: what a model must beat
to show it looks at the image."""
from __future__ import annotations

from collections import Counter, defaultdict

from data.shape_world.refcoco import REFCOCO_SPLITS, Expression


def vqa_accuracy(prediction: str, answers: list[dict]) -> float:
    """Official VQA accuracy for already-normalised answers: mean over the 10 leave-one-out subsets of
    min(1, matches / 3)."""
    k = sum(a["answer"] == prediction for a in answers)
    n = len(answers)
    return (k * min(1.0, (k - 1) / 3) + (n - k) * min(1.0, k / 3)) / n


def _most_common(values) -> str:
    counts = Counter(values)
    return min(counts, key=lambda v: (-counts[v], v))  # ties broken alphabetically


def vqa_baselines(annotated: dict[str, list]) -> dict:
    """annotated[image_set] = [(question, template, annotation)]; priors fit on train2014."""
    train = annotated["train2014"]
    majority = _most_common(a["multiple_choice_answer"] for _, _, a in train)
    by_template, by_question = defaultdict(list), defaultdict(list)
    for question, template, ann in train:
        by_template[template].append(ann["multiple_choice_answer"])
        by_question[question].append(ann["multiple_choice_answer"])
    best_template = {t: _most_common(v) for t, v in by_template.items()}
    best_question = {q: _most_common(v) for q, v in by_question.items()}
    out = {"majority_answer": majority}
    for image_set, rows in annotated.items():
        n = max(len(rows), 1)
        template_guess = [best_template.get(t, majority) for _, t, _ in rows]
        question_guess = [best_question.get(q, best_template.get(t, majority)) for q, t, _ in rows]
        out[image_set] = {
            "num_questions": len(rows),
            "majority": sum(vqa_accuracy(majority, a["answers"]) for _, _, a in rows) / n,
            "text_only_per_template": sum(vqa_accuracy(g, a["answers"]) for g, (_, _, a) in
                                          zip(template_guess, rows, strict=True)) / n,
            "text_only_per_question": sum(vqa_accuracy(g, a["answers"]) for g, (_, _, a) in
                                          zip(question_guess, rows, strict=True)) / n,
        }
    return out


def vcr_baselines(rows: dict[str, list[dict]]) -> dict:
    """Chance, and the most frequent label position of train applied to val."""
    out = {"chance": {"q2a": 0.25, "qa2r": 0.25, "q2ar": 0.0625}}
    for key in ("answer_label", "rationale_label"):
        best = _most_common(r[key] for r in rows["train"])
        out[f"majority_{key}_val"] = sum(r[key] == best for r in rows["val"]) / max(len(rows["val"]), 1)
    out["num_questions"] = {split: len(r) for split, r in rows.items()}
    return out


def iou_plus_one(a: list[float], b: list[float]) -> float:
    """IoU of two x1, y1, x2, y2 boxes with inclusive pixel ends (areas (x2 - x1 + 1)(y2 - y1 + 1))."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = iw * ih
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)
    return inter / (area(a) + area(b) - inter)


def _hit_rates(expressions: list[Expression], candidates_of) -> dict:
    random_hit, largest_hit, any_hit = 0.0, 0, 0
    for e in expressions:
        hits = [iou_plus_one(c, e.gt) >= 0.5 for c in candidates_of(e)]
        largest = max(range(len(hits)), key=lambda i: (candidates_of(e)[i][2] - candidates_of(e)[i][0] + 1)
                      * (candidates_of(e)[i][3] - candidates_of(e)[i][1] + 1))
        random_hit += sum(hits) / len(hits)
        largest_hit += hits[largest]
        any_hit += any(hits)
    n = max(len(expressions), 1)
    return {"random_box": random_hit / n, "largest_box": largest_hit / n, "upper_bound": any_hit / n}


def refcoco_baselines(expressions: list[Expression]) -> dict:
    """Per split: expected accuracy of a uniformly random candidate and of the largest one (IoU >= 0.5, +1
    convention), with gt candidates (the image's instances) and with the detections; no whole-image box."""
    out = {}
    for split in REFCOCO_SPLITS:
        chosen = [e for e in expressions if e.split == split]
        out[split] = {"num_expressions": len(chosen),
                      "gt_boxes": _hit_rates(chosen, lambda e: e.gt_candidates),
                      "proposals": _hit_rates(chosen, lambda e: e.proposals)}
    return out
