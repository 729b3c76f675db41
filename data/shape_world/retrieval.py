"""Image-text retrieval data of the toy world in the Karpathy-split formats: Flickr30K (`flickr30k/`: the caption
file, `flickr30k-images/<id>.jpg`, bottom-up box files `flickr30k_frcnn/<id>.json`) and COCO
(`coco/dataset_coco.json` over the toy COCO 2014 images, whose box files are the VQA ones, named by `cocoid`)."""
from __future__ import annotations

import os
import re

import numpy as np

from common.data.box_files import write_box_file
from data.shape_world.captions import caption
from data.shape_world.coco_vqa import CocoImage
from data.shape_world.features import detect, feature_projection
from data.shape_world.files import write_jpeg, write_json
from data.shape_world.world import Scene, render

CAPTIONS_PER_IMAGE = 5  # as both real files
FIRST_FLICKR_ID = 1000000001


def sentence(scene: Scene, rng: np.random.Generator, imgid: int, sentid: int) -> dict:
    """One Karpathy sentence: `raw` as the real files write it (capital, full stop), lower-case word `tokens`."""
    text = caption(scene, rng).replace(" , ", ", ")
    raw = text[0].upper() + text[1:] + "."
    return {"raw": raw, "tokens": re.findall(r"[a-z]+", raw.lower()), "imgid": imgid, "sentid": sentid}


def karpathy_entry(scene: Scene, rng: np.random.Generator, imgid: int, split: str, filename: str,
                   extra: dict | None = None) -> dict:
    """One `images` entry with five sentences; sentence ids run on from the image's (imgid * 5 + n)."""
    sentences = [sentence(scene, rng, imgid, imgid * CAPTIONS_PER_IMAGE + n) for n in range(CAPTIONS_PER_IMAGE)]
    return {"filename": filename, "imgid": imgid, "split": split, "sentences": sentences,
            "sentids": [s["sentid"] for s in sentences], **(extra or {})}


def write_flickr30k(root: str, scenes: dict[str, list[Scene]], seed: int) -> None:
    """`root/dataset_flickr30k.json`, the images and their box files (features included)."""
    rng = np.random.default_rng([seed, 7400])
    projection = feature_projection(seed)
    entries = []
    for split in ("train", "val", "test"):
        for scene in scenes[split]:
            imgid = len(entries)
            stem = str(FIRST_FLICKR_ID + imgid)
            write_jpeg(os.path.join(root, "flickr30k-images", stem + ".jpg"), render(scene))
            det = detect(scene, rng, projection)
            write_box_file(os.path.join(root, "flickr30k_frcnn", stem + ".json"), det.boxes, features=det.features,
                           classes=det.classes, attrs=det.attrs, image_w=scene.width, image_h=scene.height,
                           image_id=int(stem))
            entries.append(karpathy_entry(scene, rng, imgid, split, stem + ".jpg"))
    write_json(os.path.join(root, "dataset_flickr30k.json"), {"images": entries, "dataset": "flickr30k"})


def coco_split(position: int, count: int) -> str:
    """Karpathy-style split of the toy val2014 images: the first quarter val, the second test, the rest restval."""
    quarter = max(count // 4, 1)
    return "val" if position < quarter else "test" if position < 2 * quarter else "restval"


def write_coco_karpathy(coco_root: str, by_set: dict[str, list[CocoImage]], seed: int) -> None:
    """`coco_root/dataset_coco.json`: train2014 images as train, val2014 split into val / test / restval."""
    rng = np.random.default_rng([seed, 7500])
    entries = []
    for image_set in ("train2014", "val2014"):
        images = by_set[image_set]
        for position, im in enumerate(images):
            split = "train" if image_set == "train2014" else coco_split(position, len(images))
            entries.append(karpathy_entry(im.scene, rng, len(entries), split, im.file_name,
                                          {"filepath": image_set, "cocoid": im.image_id}))
    write_json(os.path.join(coco_root, "dataset_coco.json"), {"images": entries, "dataset": "coco"})
