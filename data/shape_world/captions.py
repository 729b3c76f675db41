"""Pre-training data of the toy world: Conceptual Captions (folders and stored zips, frcnn box files,
JSON-lines indexes), COCO captions 2017 for the attention-map tool, and the text-only corpus."""
from __future__ import annotations

import os

import numpy as np

from common.data.box_files import write_box_file
from data.shape_world.coco_vqa import CocoImage, instances_document
from data.shape_world.features import detect, feature_projection
from data.shape_world.files import write_jpeg, write_json, write_jsonl, write_text, zip_folder
from data.shape_world.vocab import COLOUR_NAMES, SHAPE_NAMES, SIZES, shape_noun, shape_plural
from data.shape_world.world import Scene, ToyObject, render

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five")


def _phrase(rng, obj: ToyObject) -> str:
    size = f"{obj.size} " if rng.random() < 0.6 else ""
    return f"a {size}{obj.colour} {shape_noun(obj.shape)}"


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A description of every object, left to right ("a red ball to the left of a large blue kite")."""
    objects = sorted(scene.objects, key=lambda o: o.center[0])
    phrases = [_phrase(rng, o) for o in objects]
    if len(phrases) == 2 and objects[0].box[2] < objects[1].box[0] and rng.random() < 0.5:
        return f"{phrases[0]} to the left of {phrases[1]}"
    return " , ".join(phrases[:-1]) + f" and {phrases[-1]}"


def write_conceptual_captions(cc_root: str, scenes: dict[str, list[Scene]], seed: int) -> None:
    """{split}_image/{n:08d}.jpg, {split}_frcnn/{n:08d}.json, the stored zips of both, and the jsonl indexes."""
    projection = feature_projection(seed)
    for stream, split in enumerate(("train", "val")):
        rng = np.random.default_rng([seed, 7100 + stream])
        plain, with_frcnn = [], []
        for n, scene in enumerate(scenes[split]):
            name = f"{n:08d}"
            write_jpeg(os.path.join(cc_root, f"{split}_image", name + ".jpg"), render(scene))
            det = detect(scene, rng, projection)
            write_box_file(os.path.join(cc_root, f"{split}_frcnn", name + ".json"), det.boxes,
                           features=det.features, classes=det.classes, attrs=det.attrs,
                           image_w=scene.width, image_h=scene.height, image_id=n)
            words = caption(scene, rng).split(" ")
            plain.append({"image": f"{split}_image.zip@/{name}.jpg", "caption": words})
            with_frcnn.append(dict(plain[-1], frcnn=f"{split}_frcnn.zip@/{name}.json"))
        write_jsonl(os.path.join(cc_root, f"{split}.json"), plain)
        write_jsonl(os.path.join(cc_root, f"{split}_frcnn.json"), with_frcnn)
        for kind in ("image", "frcnn"):
            zip_folder(os.path.join(cc_root, f"{split}_{kind}"), os.path.join(cc_root, f"{split}_{kind}.zip"))


def write_coco_captions(coco_root: str, images: dict[str, list[CocoImage]], seed: int) -> None:
    """annotations/captions_{train,val}2017.json (5 captions per image) + instances_*2017.json + images."""
    for stream, image_set in enumerate(("train2017", "val2017")):
        rng = np.random.default_rng([seed, 7200 + stream])
        ims = images[image_set]
        for im in ims:
            write_jpeg(os.path.join(coco_root, image_set, im.file_name), render(im.scene))
        doc = instances_document(ims, f"Toy world COCO {image_set}")
        write_json(os.path.join(coco_root, "annotations", f"instances_{image_set}.json"), doc)
        anns = []
        for im in ims:
            for _ in range(5):
                text = caption(im.scene, rng)
                text = text.replace(" , ", ", ")
                anns.append({"id": len(anns) + 1, "image_id": im.image_id, "caption": text[0].upper() + text[1:] + "."})
        write_json(os.path.join(coco_root, "annotations", f"captions_{image_set}.json"),
                   {"info": doc["info"], "licenses": doc["licenses"], "images": doc["images"], "annotations": anns})


def _sentence(rng: np.random.Generator, style: str) -> str:
    colour = COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
    other = COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
    shape, shape2 = (SHAPE_NAMES[int(i)] for i in rng.integers(len(SHAPE_NAMES), size=2))
    size = SIZES[int(rng.integers(2))]
    count = int(rng.integers(2, 6))
    if style == "wiki":
        options = [f"A {shape_noun(shape)} is often drawn in {colour} .",
                   f"There are {NUMBER_WORDS[count]} {colour} {shape_plural(shape)} in the picture .",
                   f"The {size} {shape_noun(shape)} is to the left of the {other} {shape_noun(shape2)} ."]
    else:
        options = [f"She saw a {size} {colour} {shape_noun(shape)} next to the {shape_noun(shape2)} .",
                   f"He painted the {shape_noun(shape)} {colour} and the {shape_noun(shape2)} {other} .",
                   f"They counted {NUMBER_WORDS[count]} {shape_plural(shape)} on the table ."]
    return options[int(rng.integers(len(options)))]


def write_corpus(corpus_root: str, lines: int, seed: int) -> None:
    """en_corpus/wiki.doc and bc1g.doc: one sentence per line, a blank line between short 'documents'."""
    for stream, (name, style) in enumerate((("wiki.doc", "wiki"), ("bc1g.doc", "books"))):
        rng = np.random.default_rng([seed, 7300 + stream])
        out = []
        while len(out) < lines:
            out += [_sentence(rng, style) for _ in range(int(rng.integers(3, 9)))] + [""]
        write_text(os.path.join(corpus_root, name), out[:lines])
