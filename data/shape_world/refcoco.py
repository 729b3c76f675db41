"""RefCOCO+ (UNC) files for toy train2014 images: `refs(unc).p`, `instances.json` and MAttNet-style detections.

testA refers to people and testB to other objects, as in the real split; expressions name the category plus
the colour, size or side that tells the object apart from others of its category, and the object whose box is at
least 1.5x the area of every other one is also "the biggest one" (a fact of its own box, which a model trained
from scratch on a CPU-sized world learns; the others need a word matched against a region).
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import numpy as np

from common.atomic_write import open_atomic
from data.shape_world.coco_vqa import CocoImage, instances_document
from data.shape_world.files import write_json
from data.shape_world.vocab import COCO_ID_TO_NAME, SHAPE_CATEGORY_ID, SHAPE_NAMES, shape_noun
from data.shape_world.world import Scene, ToyObject

REFCOCO_SPLITS = ("train", "val", "testA", "testB")
# Said of the object whose box is at least 1.5x the area of every other one in the image, whatever its category.
BIGGEST_PHRASES = ("the biggest one", "biggest thing in the picture")


@dataclass
class Expression:
    """One (ref, sentence) sample, with boxes in VL-BERT's xyxy convention (x2 = x + w)."""
    split: str
    gt: list[float]
    gt_candidates: list[list[float]]
    proposals: list[list[float]]


def xywh_to_xyxy(box: list[float]) -> list[float]:
    x, y, w, h = box
    return [x, y, x + w, y + h]


def _side(scene: Scene, obj: ToyObject, peers: list[ToyObject]) -> str | None:
    """'left'/'right' if obj is clearly the leftmost/rightmost of its peers (centres >= 10 % of the width apart)."""
    others = [p.center[0] for p in peers if p is not obj]
    if len(others) == 0:
        return None
    cx, margin = obj.center[0], 0.1 * scene.width
    if cx + margin <= min(others):
        return "left"
    if cx - margin >= max(others):
        return "right"
    return None


def expressions_for(scene: Scene, obj: ToyObject) -> list[str]:
    """Phrases that pick out obj among the objects of its category (empty if none does)."""
    peers = [o for o in scene.objects if o.shape == obj.shape]
    noun = shape_noun(obj.shape)
    if len(peers) == 1:
        return [f"the {noun}", f"the {obj.colour} {noun}", f"the {obj.size} {noun}"]
    out = []
    if sum(p.colour == obj.colour for p in peers) == 1:
        out.append(f"the {obj.colour} {noun}")
    if sum(p.size == obj.size for p in peers) == 1:
        out.append(f"the {obj.size} {noun}")
    if sum(p.size == obj.size and p.colour == obj.colour for p in peers) == 1:
        out.append(f"the {obj.size} {obj.colour} {noun}")
    side = _side(scene, obj, peers)
    if side:
        out += [f"the {noun} on the {side}", f"{obj.colour} {noun} on the {side}"]
    return out


def _refers_in_split(obj: ToyObject, split: str) -> bool:
    return split not in ("testA", "testB") or (obj.shape == "person") == (split == "testA")


def _detections(im: CocoImage, rng: np.random.Generator, first_id: int) -> list[dict]:
    """Mostly good boxes (some badly jittered, a few missed) plus 1-2 false positives; never empty."""
    scene, dets = im.scene, []
    boxes = []
    for obj in scene.objects:
        if rng.random() < 0.05:
            continue
        scale = 0.3 if rng.random() < 0.1 else 0.04
        boxes.append((obj.category_id, _jittered_xyxy(rng, obj.box, scene, scale)))
    for _ in range(int(rng.integers(1, 3))):
        w, h = rng.uniform(0.15, 0.4) * scene.width, rng.uniform(0.15, 0.4) * scene.height
        x0, y0 = rng.uniform(0, scene.width - 1 - w), rng.uniform(0, scene.height - 1 - h)
        boxes.append((SHAPE_CATEGORY_ID[SHAPE_NAMES[int(rng.integers(len(SHAPE_NAMES)))]], (x0, y0, x0 + w, y0 + h)))
    for k, (cat, (x0, y0, x1, y1)) in enumerate(boxes):
        det_id = first_id + k
        dets.append({"det_id": det_id, "h5_id": det_id, "image_id": im.image_id, "category_id": cat,
                     "category_name": COCO_ID_TO_NAME[cat],
                     "box": [round(float(v), 2) for v in (x0, y0, x1 - x0 + 1, y1 - y0 + 1)],
                     "score": round(float(rng.uniform(0.65, 0.999)), 4)})
    return dets


def _jittered_xyxy(rng, box, scene: Scene, scale: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    w, h = x1 - x0 + 1, y1 - y0 + 1
    d = rng.normal(0.0, scale, size=4) * np.array([w, h, w, h])
    nx0, ny0 = float(np.clip(x0 + d[0], 0, scene.width - 3)), float(np.clip(y0 + d[1], 0, scene.height - 3))
    nx1 = float(np.clip(x1 + d[2], nx0 + 1, scene.width - 2))
    ny1 = float(np.clip(y1 + d[3], ny0 + 1, scene.height - 2))
    return nx0, ny0, nx1, ny1


def _refs_for_image(im: CocoImage, rng: np.random.Generator, next_ref: int, next_sent: int) -> list[dict]:
    refs = []
    biggest = im.scene.biggest()
    for j, obj in enumerate(im.scene.objects):
        phrases = expressions_for(im.scene, obj)
        always = list(BIGGEST_PHRASES) if obj is biggest else []
        if not (phrases or always) or not _refers_in_split(obj, im.refcoco_split):
            continue
        wanted = int(rng.integers(0 if always else 1, 2 if always else 4))
        picks = rng.choice(len(phrases), size=min(len(phrases), wanted), replace=False)
        sentences = []
        for sent in always + [phrases[k] for k in sorted(int(p) for p in picks)]:
            raw = sent[0].upper() + sent[1:] if rng.random() < 0.5 else sent
            sentences.append({"tokens": sent.split(), "raw": raw, "sent": sent, "sent_id": next_sent})
            next_sent += 1
        ann_id = im.image_id * 10 + j
        refs.append({"sent_ids": [s["sent_id"] for s in sentences], "file_name":
                     f"COCO_train2014_{im.image_id:012d}_{ann_id}.jpg", "ann_id": ann_id, "ref_id": next_ref,
                     "image_id": im.image_id, "split": im.refcoco_split, "sentences": sentences,
                     "category_id": obj.category_id})
        next_ref += 1
    return refs


def write_refcoco(coco_root: str, images: list[CocoImage], seed: int) -> list[Expression]:
    """Write refcoco+/refs(unc).p, instances.json and proposal/res101_coco_minus_refer_notime_dets.json."""
    rng = np.random.default_rng([seed, 5000])
    ref_images = [im for im in images if im.refcoco_split is not None]
    refs, dets = [], []
    for im in ref_images:
        sent_base = sum(len(r["sentences"]) for r in refs)
        refs += _refs_for_image(im, rng, len(refs), sent_base)
        dets += _detections(im, rng, len(dets))
    folder = os.path.join(coco_root, "refcoco+")
    os.makedirs(folder, exist_ok=True)
    with open_atomic(os.path.join(folder, "refs(unc).p"), "wb") as f:
        pickle.dump(refs, f, protocol=2)
    doc = instances_document(ref_images, "Toy world RefCOCO+ instances")
    write_json(os.path.join(folder, "instances.json"),
               {k: doc[k] for k in ("images", "annotations", "categories")})
    write_json(os.path.join(folder, "proposal", "res101_coco_minus_refer_notime_dets.json"), dets)
    return _expressions(ref_images, refs, dets)


def _expressions(images: list[CocoImage], refs: list[dict], dets: list[dict]) -> list[Expression]:
    by_image = {im.image_id: im for im in images}
    proposals: dict[int, list] = {}
    for d in dets:
        proposals.setdefault(d["image_id"], []).append(xywh_to_xyxy(d["box"]))
    out = []
    for ref in refs:
        im = by_image[ref["image_id"]]
        anns = {a["id"]: a for a in im.annotations()}
        gt = xywh_to_xyxy(anns[ref["ann_id"]]["bbox"])
        candidates = [xywh_to_xyxy(a["bbox"]) for a in anns.values()]
        out += [Expression(ref["split"], gt, candidates, proposals[im.image_id]) for _ in ref["sentences"]]
    return out
