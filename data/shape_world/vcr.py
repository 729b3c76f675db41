"""VCR v1.0 files for toy scenes: `{train,val,test}.jsonl` and `vcr1images/<movie>/<stem>.{jpg,json}`.

Two kinds of question, both needing the image:

* "Which of them is the biggest?" over 4 objects (one at least 1.5x the area of each other), the rationales naming
  the same 4 objects. The right choice is a fact of its own region (and, for QA->R, the region the answer names):
  a CPU run from BERT learns it in the first epoch, even with a random ResNet.
* The colour or the place of one referenced object, the rationales restating other visual facts of that object
  (one set of them true). Telling the right choice needs the colour or side *word* matched against the region:
  learnt (Q->A) after a few epochs near chance, given region features that show colour (the toy backbone).
"""
from __future__ import annotations

import os
import string

import numpy as np

from data.shape_world.files import write_jpeg, write_json, write_jsonl, write_text
from data.shape_world.vocab import COLOUR_NAMES, SIZES, no_space_name
from data.shape_world.world import BIGGEST_FACTOR, Scene, ToyObject, point_polygons, render

SIDE_WORDS = {"left": ["on", "the", "left"], "right": ["on", "the", "right"],
              "top": ["at", "the", "top"], "bottom": ["at", "the", "bottom"]}
_SPLIT_OFFSET = {"train": 0, "val": 500, "test": 900}
TEST_DROPPED = ("answer_label", "rationale_label", "question_orig", "answer_orig", "rationale_orig",
                "answer_match_iter", "rationale_match_iter", "answer_sources", "rationale_sources",
                "answer_likelihood", "match_fold", "match_index", "interesting_scores")


def _horizontal(scene: Scene, obj: ToyObject) -> str | None:
    dx = obj.center[0] / scene.width - 0.5
    return None if abs(dx) < 0.08 else ("left" if dx < 0 else "right")


def _dominant_side(scene: Scene, obj: ToyObject) -> str | None:
    dx, dy = obj.center[0] / scene.width - 0.5, obj.center[1] / scene.height - 0.5
    big, small = max(abs(dx), abs(dy)), min(abs(dx), abs(dy))
    if big < 0.15 or big < 1.5 * small:
        return None
    if abs(dx) > abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def _others(rng, values, true_value, k: int = 3) -> list:
    rest = [v for v in values if v != true_value]
    return [rest[int(i)] for i in rng.choice(len(rest), size=k, replace=False)]


def _colour_item(rng, scene: Scene, i: int):
    obj = scene.objects[i]
    side = _horizontal(scene, obj)
    if side is None:
        return None
    wearing = obj.shape == "person"
    question = ["What", "color", "is", [i]] + (["wearing", "?"] if wearing else ["?"])
    answers = [[[i], "is"] + (["wearing"] if wearing else []) + [c, "."]
               for c in [obj.colour] + _others(rng, COLOUR_NAMES, obj.colour)]
    other_size = SIZES[1 - SIZES.index(obj.size)]
    other_side = "right" if side == "left" else "left"
    combos = [(obj.size, side), (other_size, side), (obj.size, other_side), (other_size, other_side)]
    rationales = [[[i], "is", obj.colour, ",", size, "and", "on", "the", s, "of", "the", "picture", "."]
                  for size, s in combos]
    return question, answers, rationales


def _side_item(rng, scene: Scene, i: int):
    obj = scene.objects[i]
    side = _dominant_side(scene, obj)
    if side is None:
        return None
    question = ["Where", "is", [i], "in", "the", "picture", "?"]
    answers = [[[i], "is"] + SIDE_WORDS[s] + ["."] for s in [side] + _others(rng, list(SIDE_WORDS), side)]
    wrong_colour = _others(rng, COLOUR_NAMES, obj.colour, 1)[0]
    other_size = SIZES[1 - SIZES.index(obj.size)]
    combos = [(obj.colour, obj.size), (wrong_colour, obj.size), (obj.colour, other_size), (wrong_colour, other_size)]
    rationales = [[[i], "looks", c, "and", size, "."] for c, size in combos]
    return question, answers, rationales


def _biggest_item(rng, scene: Scene):
    """Which of 4 objects is the biggest (by at least 1.5x in area): a fact of one region alone, so the answer and
    the rationale are scored from each choice's own region."""
    for top in rng.permutation(len(scene.objects)):
        area = scene.objects[top].box_area
        smaller = [k for k in range(len(scene.objects)) if BIGGEST_FACTOR * scene.objects[k].box_area <= area]
        if len(smaller) >= 3:
            picked = [int(top)] + [smaller[int(k)] for k in rng.choice(len(smaller), size=3, replace=False)]
            break
    else:
        return None
    question = ["Which", "of", "them", "is", "the", "biggest", "?"]
    answers = [[[k], "is", "."] for k in picked]
    rationales = [[[k], "takes", "up", "more", "room", "than", "the", "others", "."] for k in picked]
    return question, answers, rationales


def _orig_text(tokens: list) -> str:
    """The worker-style string: object mentions as 1-based numbers."""
    words = [" and ".join(str(i + 1) for i in t) if isinstance(t, list) else t for t in tokens]
    text = " ".join(words)
    for mark in ("?", ".", ","):
        text = text.replace(" " + mark, mark)
    return text


def _shuffled(rng, choices: list) -> tuple[list, int]:
    order = [int(k) for k in rng.permutation(len(choices))]
    return [choices[k] for k in order], order.index(0)


def _movie_and_stem(rng, split: str, m: int) -> tuple[str, str, str]:
    """(folder, movie, stem) in the two real naming styles: lsmdc_<movie> and movieclips_<Title>."""
    movie_index = _SPLIT_OFFSET[split] + m // 6
    if movie_index % 2 == 0:
        movie = f"{1000 + movie_index:04d}_TOY_SHAPES_{movie_index}"
        t = m % 6
        return f"lsmdc_{movie}", movie, f"{movie}_00.{t:02d}.10.000-00.{t:02d}.14.500@{m % 3}"
    movie = f"Toy_Shapes_Clip_{movie_index}"
    clip = "".join(rng.choice(list(string.ascii_letters + string.digits + "_-"), size=11))
    return f"movieclips_{movie}", movie, f"{clip}@{m % 4}"


def _metadata(scene: Scene, rng) -> dict:
    boxes = [[float(v) for v in o.box] + [round(float(rng.uniform(0.8, 0.999)), 4)] for o in scene.objects]
    return {"boxes": boxes, "segms": [point_polygons(o) for o in scene.objects],
            "names": [no_space_name(o.coco_name) for o in scene.objects],
            "width": scene.width, "height": scene.height}


def _items_for_scene(rng, scene: Scene) -> list:
    """The "biggest" item when the scene allows one, then one colour or place item of a random object."""
    items = [item for item in [_biggest_item(rng, scene)] if item is not None]
    makers = [(_colour_item, i) for i in range(len(scene.objects))] + \
             [(_side_item, i) for i in range(len(scene.objects))]
    for k in rng.permutation(len(makers)):
        make, i = makers[int(k)]
        item = make(rng, scene, i)
        if item is not None:
            items.append(item)
            break
    return items


def _row(rng, split: str, n: int, item, common: dict) -> dict:
    question, answers, rationales = item
    answer_choices, answer_label = _shuffled(rng, answers)
    rationale_choices, rationale_label = _shuffled(rng, rationales)
    row = dict(common, annot_id=f"{split}-{n}", question=question, answer_choices=answer_choices,
               rationale_choices=rationale_choices, answer_label=answer_label, rationale_label=rationale_label,
               question_orig=_orig_text(question), answer_orig=_orig_text(answers[0]),
               rationale_orig=_orig_text(rationales[0]), match_fold=f"{split}-{n % 2}", match_index=n,
               answer_match_iter=[0 if k == answer_label else 1 + k for k in range(4)],
               rationale_match_iter=[0 if k == rationale_label else 1 + k for k in range(4)],
               answer_sources=[int(v) for v in rng.integers(0, 10000, size=4)],
               rationale_sources=[int(v) for v in rng.integers(0, 10000, size=4)],
               answer_likelihood=["unlikely", "possible", "likely"][int(rng.integers(3))],
               interesting_scores=[int(v) for v in rng.integers(-1, 2, size=3)])
    if split == "test":
        for key in TEST_DROPPED:
            row.pop(key)
    return row


def write_vcr(vcr_root: str, scenes: dict[str, list[Scene]], seed: int) -> dict[str, list[dict]]:
    """Write images, metadata and the three jsonl files; returns the rows per split."""
    write_text(os.path.join(vcr_root, "vcr1images", "VERSION.txt"), ["toy world, VCR v1.0 layout"])
    all_rows = {}
    for stream, split in enumerate(("train", "val", "test")):
        rng = np.random.default_rng([seed, 6000 + stream])
        rows = []
        for m, scene in enumerate(scenes[split]):
            folder, movie, stem = _movie_and_stem(rng, split, m)
            write_jpeg(os.path.join(vcr_root, "vcr1images", folder, stem + ".jpg"), render(scene))
            write_json(os.path.join(vcr_root, "vcr1images", folder, stem + ".json"), _metadata(scene, rng))
            common = {"objects": [no_space_name(o.coco_name) for o in scene.objects],
                      "img_fn": f"{folder}/{stem}.jpg", "metadata_fn": f"{folder}/{stem}.json", "movie": movie,
                      "img_id": f"{split}-{m}"}
            for q_number, item in enumerate(_items_for_scene(rng, scene)):
                rows.append(_row(rng, split, len(rows), item, dict(common, question_number=q_number)))
        write_jsonl(os.path.join(vcr_root, f"{split}.jsonl"), rows)
        all_rows[split] = rows
    return all_rows
