"""Build the whole toy world under one root: COCO + VQA v2 + RefCOCO+, VCR, Conceptual Captions, COCO
captions 2017, the text corpus and the Karpathy retrieval files (Flickr30K, COCO), plus `baselines.json`.
Same seed and size -> same bytes."""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np

from data.shape_world.baselines import refcoco_baselines, vcr_baselines, vqa_baselines
from data.shape_world.captions import write_coco_captions, write_conceptual_captions, write_corpus
from data.shape_world.coco_vqa import (
    CocoImage,
    write_coco_images,
    write_instance_files,
    write_precomputed_boxes,
    write_vqa,
)
from data.shape_world.files import write_json
from data.shape_world.refcoco import REFCOCO_SPLITS, write_refcoco
from data.shape_world.retrieval import write_coco_karpathy, write_flickr30k
from data.shape_world.vcr import write_vcr
from data.shape_world.world import Scene, sample_scene

logger = logging.getLogger(__name__)

FIRST_IMAGE_ID = {"train2014": 100001, "val2014": 200001, "test2015": 300001,
                  "train2017": 400001, "val2017": 410001}
_REFCOCO_FLAVOUR = {"train": "any", "val": "any", "testA": "people", "testB": "things"}


@dataclass(frozen=True)
class WorldSize:
    image_sizes: tuple[tuple[int, int], ...]  # (width, height) choices, portrait included
    coco: dict[str, int]  # plain (non-RefCOCO) images per COCO image set
    refcoco: dict[str, int]  # train2014 images per RefCOCO+ split
    vcr: dict[str, int]
    cc: dict[str, int]
    corpus_lines: int
    vqa_per_image: int = 5
    flickr: tuple[tuple[str, int], ...] = (("train", 30), ("val", 8), ("test", 10))  # images per Karpathy split


WORLD_SIZES = {
    "small": WorldSize(((160, 120), (120, 160), (200, 120)),
                       {"train2014": 36, "val2014": 20, "test2015": 20, "train2017": 6, "val2017": 8},
                       {"train": 12, "val": 4, "testA": 4, "testB": 4},
                       {"train": 24, "val": 8, "test": 8}, {"train": 40, "val": 10}, corpus_lines=120),
    "demo": WorldSize(((192, 144), (144, 192), (224, 128)),
                      {"train2014": 900, "val2014": 300, "test2015": 100, "train2017": 40, "val2017": 40},
                      {"train": 200, "val": 40, "testA": 40, "testB": 40},
                      {"train": 600, "val": 150, "test": 100}, {"train": 600, "val": 100}, corpus_lines=4000,
                      vqa_per_image=6, flickr=(("train", 400), ("val", 50), ("test", 100))),
}


def _scenes(rng: np.random.Generator, sizes, count: int, flavour: str = "any") -> list[Scene]:
    out = []
    for _ in range(count):
        width, height = sizes[int(rng.integers(len(sizes)))]
        out.append(sample_scene(rng, width, height, flavour))
    return out


def coco_world(seed: int, size: WorldSize) -> dict[str, list[CocoImage]]:
    """COCO images per image set; train2014 ends with the RefCOCO+ images (split-specific scenes)."""
    by_set: dict[str, list[CocoImage]] = {}
    for stream, (image_set, count) in enumerate(size.coco.items()):
        rng = np.random.default_rng([seed, 1000 + stream])
        scenes = [(s, None) for s in _scenes(rng, size.image_sizes, count)]
        if image_set == "train2014":
            for split in REFCOCO_SPLITS:
                flavour = _REFCOCO_FLAVOUR[split]
                scenes += [(s, split) for s in _scenes(rng, size.image_sizes, size.refcoco[split], flavour)]
        first = FIRST_IMAGE_ID[image_set]
        by_set[image_set] = [CocoImage(first + k, image_set, s, split) for k, (s, split) in enumerate(scenes)]
    return by_set


GENERATED = ("coco", "vcr", "conceptual-captions", "en_corpus", "flickr30k", "baselines.json")


def _prepare_root(root: str) -> None:
    """Clear a previous toy world (recognised by its baselines.json); refuse to write into other non-empty folders."""
    if not os.path.isdir(root) or not os.listdir(root):
        return
    if not os.path.isfile(os.path.join(root, "baselines.json")):
        raise FileExistsError(f"{root}: folder is not empty and holds no toy world (no baselines.json); "
                              "choose an empty or new --root")
    for name in GENERATED:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def generate(root: str, seed: int = 0, size: str = "small") -> dict:
    """Write the toy world under `root`; returns the baselines (also written to root/baselines.json)."""
    if size not in WORLD_SIZES:
        raise ValueError(f"unknown toy world size {size!r}; choose one of {sorted(WORLD_SIZES)}")
    spec = WORLD_SIZES[size]
    start = time.time()
    _prepare_root(root)
    coco_root = os.path.join(root, "coco")
    by_set = coco_world(seed, spec)
    write_coco_images(coco_root, [im for s in ("train2014", "val2014", "test2015") for im in by_set[s]])
    write_instance_files(coco_root, by_set)
    vqa = write_vqa(coco_root, by_set, seed, spec.vqa_per_image)
    write_precomputed_boxes(coco_root, by_set, seed)
    expressions = write_refcoco(coco_root, by_set["train2014"], seed)
    write_coco_captions(coco_root, by_set, seed)
    write_coco_karpathy(coco_root, by_set, seed)
    logger.info("COCO, VQA v2 and RefCOCO+ written in %.1f s", time.time() - start)

    vcr_rng = np.random.default_rng([seed, 2000])
    vcr_scenes = {s: _scenes(vcr_rng, spec.image_sizes, n, "vcr") for s, n in spec.vcr.items()}
    vcr_rows = write_vcr(os.path.join(root, "vcr"), vcr_scenes, seed)
    cc_rng = np.random.default_rng([seed, 2100])
    cc_scenes = {s: _scenes(cc_rng, spec.image_sizes, n) for s, n in spec.cc.items()}
    write_conceptual_captions(os.path.join(root, "conceptual-captions"), cc_scenes, seed)
    write_corpus(os.path.join(root, "en_corpus"), spec.corpus_lines, seed)
    flickr_rng = np.random.default_rng([seed, 2200])
    write_flickr30k(os.path.join(root, "flickr30k"),
                    {s: _scenes(flickr_rng, spec.image_sizes, n) for s, n in spec.flickr}, seed)

    baselines = {"seed": seed, "size": size, "vqa": vqa_baselines(vqa), "vcr": vcr_baselines(vcr_rows),
                 "refcoco+": refcoco_baselines(expressions)}
    write_json(os.path.join(root, "baselines.json"), baselines)
    logger.info("toy world (%s, seed %d) written to %s in %.1f s", size, seed, root, time.time() - start)
    return baselines
