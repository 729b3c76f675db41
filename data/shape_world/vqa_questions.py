"""VQA question templates over toy scenes, and answer balancing so that text alone scores near chance.

Every template asks about colour, count, position or size, and its answers are balanced over the split.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from data.shape_world.vocab import COLOUR_NAMES, SHAPE_NAMES, SIZES, shape_noun, shape_plural
from data.shape_world.world import Scene, ToyObject

COUNT_ANSWERS = ("0", "1", "2", "3")
NOUN_ANSWERS = tuple(shape_noun(s) for s in SHAPE_NAMES)
# template -> (question_type (a prefix from the official list), answer_type, answer set)
TEMPLATES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "color": ("what color is the", "other", COLOUR_NAMES),
    "color_side": ("what color is the", "other", COLOUR_NAMES),
    "count": ("how many", "number", COUNT_ANSWERS),
    "count_color": ("how many", "number", COUNT_ANSWERS),
    "exists": ("is there a", "yes/no", ("yes", "no")),
    "left_of": ("is the", "yes/no", ("yes", "no")),
    "size": ("what", "other", SIZES),
    "shape": ("what is the", "other", NOUN_ANSWERS),
}


@dataclass(frozen=True)
class Question:
    template: str
    question: str
    answer: str


def _left_of(a: ToyObject, b: ToyObject) -> bool:
    return a.box[2] < b.box[0]


def _unique_by_colour_shape(scene: Scene) -> list[ToyObject]:
    return [o for o in scene.objects if scene.count(shape=o.shape, colour=o.colour) == 1]


def _colour_questions(scene: Scene) -> list[Question]:
    out = []
    for obj in scene.objects:
        peers = [o for o in scene.objects if o.shape == obj.shape]
        noun = shape_noun(obj.shape)
        if len(peers) == 1:
            out.append(Question("color", f"what color is the {noun}?", obj.colour))
        elif len(peers) == 2:
            other = peers[0] if peers[1] is obj else peers[1]
            if _left_of(obj, other) or _left_of(other, obj):
                side = "left" if _left_of(obj, other) else "right"
                out.append(Question("color_side", f"what color is the {noun} on the {side}?", obj.colour))
    return out


def _count_questions(scene: Scene) -> list[Question]:
    out = []
    for shape in SHAPE_NAMES:
        n = scene.count(shape=shape)
        if str(n) in COUNT_ANSWERS:
            out.append(Question("count", f"how many {shape_plural(shape)} are there?", str(n)))
    for colour in COLOUR_NAMES:
        n = scene.count(colour=colour)
        if str(n) in COUNT_ANSWERS:
            out.append(Question("count_color", f"how many {colour} objects are there?", str(n)))
    return out


def _exists_questions(scene: Scene) -> list[Question]:
    return [Question("exists", f"is there a {colour} {shape_noun(shape)}?",
                     "yes" if scene.count(shape=shape, colour=colour) else "no")
            for shape in SHAPE_NAMES for colour in COLOUR_NAMES]


def _relation_questions(scene: Scene) -> list[Question]:
    out = []
    unique = _unique_by_colour_shape(scene)
    for a in unique:
        for b in unique:
            if a is b or a.shape == b.shape and a.colour == b.colour:
                continue
            if _left_of(a, b) or _left_of(b, a):
                answer = "yes" if _left_of(a, b) else "no"
                text = (f"is the {a.colour} {shape_noun(a.shape)} to the left of the "
                        f"{b.colour} {shape_noun(b.shape)}?")
                out.append(Question("left_of", text, answer))
    for obj in unique:
        out.append(Question("size", f"what size is the {obj.colour} {shape_noun(obj.shape)}?", obj.size))
        if scene.count(colour=obj.colour) == 1:
            out.append(Question("shape", f"what is the {obj.colour} object?", shape_noun(obj.shape)))
    return out


def candidate_questions(scene: Scene) -> list[Question]:
    """Every question the templates can ask about the scene, with its true answer."""
    return _colour_questions(scene) + _count_questions(scene) + _exists_questions(scene) + _relation_questions(scene)


class AnswerBalancer:
    """Greedy selection over a split: a question is taken only if its answer is among the least used answers
    of its template (within `slack`), so each template's answers end up nearly uniform."""

    def __init__(self, slack: int = 1):
        self.slack = slack
        self.counts: dict[str, Counter] = defaultdict(Counter)

    def accepts(self, q: Question) -> bool:
        answers = TEMPLATES[q.template][2]
        lowest = min(self.counts[q.template][a] for a in answers)
        return self.counts[q.template][q.answer] <= lowest + self.slack

    def take(self, q: Question) -> None:
        self.counts[q.template][q.answer] += 1


def select_questions(scene: Scene, rng: np.random.Generator, balancer: AnswerBalancer, per_image: int,
                     per_template: int = 2) -> list[Question]:
    """Up to `per_image` distinct questions for one image, at most `per_template` of a template, answers as the
    balancer allows. Templates are visited in a random order weighted by their number of answers, so a
    template's share of the split grows with its answer set and the text-only prior stays weak."""
    by_template: dict[str, list[Question]] = defaultdict(list)
    for q in candidate_questions(scene):
        by_template[q.template].append(q)
    templates = sorted(by_template)
    weights = np.array([len(TEMPLATES[t][2]) for t in templates], dtype=np.float64)
    chosen: list[Question] = []
    for _ in range(per_template):
        for k in rng.choice(len(templates), size=len(templates), replace=False, p=weights / weights.sum()):
            asked = {c.question for c in chosen}
            options = [q for q in by_template[templates[int(k)]] if q.question not in asked and balancer.accepts(q)]
            if not options:
                continue
            q = options[int(rng.integers(len(options)))]
            balancer.take(q)
            chosen.append(q)
            if len(chosen) == per_image:
                return chosen
    return chosen


def crowd_answers(q: Question, rng: np.random.Generator) -> list[dict]:
    """Ten answers with ids 1..10: all agree for most questions, 1-3 disagree for some (varied soft scores)."""
    answers = [q.answer] * 10
    if rng.random() < 0.3:
        wrong = [a for a in TEMPLATES[q.template][2] if a != q.answer]
        for pos in rng.choice(10, size=int(rng.integers(1, 4)), replace=False):
            answers[int(pos)] = wrong[int(rng.integers(len(wrong)))]
    return [{"answer": a, "answer_confidence": "yes" if a == q.answer else "maybe", "answer_id": i + 1}
            for i, a in enumerate(answers)]
