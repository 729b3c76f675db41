"""The Karpathy-split caption files of Flickr30K and COCO (`dataset_flickr30k.json`, `dataset_coco.json`):
`{"images": [{"filename", "filepath" (COCO), "imgid", "split", "sentences": [{"raw", "tokens", "imgid", "sentid"}],
"sentids", "cocoid" (COCO)}], "dataset": ...}`, read into one image list and one caption list per image set."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

KARPATHY_SPLITS = ("train", "restval", "val", "test")


class KarpathyError(ValueError):
    """A Karpathy caption file that does not read; the message names the file and the image."""


@dataclass(frozen=True)
class KarpathyImage:
    """One image of the split: its file (`filepath/filename`, filepath empty for Flickr30K), its id and the box
    file stem (`cocoid` for COCO, as the bottom-up box folders name them; else the file name without extension)."""

    filename: str
    filepath: str
    image_id: int
    box_stem: str
    captions: tuple[str, ...]
    sentids: tuple[int, ...]

    @property
    def relative_path(self) -> str:
        return os.path.join(self.filepath, self.filename) if self.filepath else self.filename


def parse_image_set(image_set: str) -> tuple[str, ...]:
    """"train+restval" -> ("train", "restval"); every part must be a Karpathy split."""
    parts = tuple(p for p in str(image_set).split("+") if p)
    unknown = [p for p in parts if p not in KARPATHY_SPLITS]
    if not parts or unknown:
        raise KarpathyError(f"unknown Karpathy split {image_set!r}: use {'/'.join(KARPATHY_SPLITS)}, joined with '+'")
    return parts


def _image(entry: object, path: str, position: int) -> KarpathyImage:
    where = f"{path}: images[{position}]"
    if not isinstance(entry, dict):
        raise KarpathyError(f"{where} is not an object")
    missing = [key for key in ("filename", "split", "sentences") if key not in entry]
    if missing:
        raise KarpathyError(f"{where} lacks {missing}")
    sentences = entry["sentences"]
    if not isinstance(sentences, list) or not sentences:
        raise KarpathyError(f"{where} ({entry['filename']}) has no sentences")
    if not all(isinstance(s, dict) and isinstance(s.get("raw"), str) and s["raw"].strip() for s in sentences):
        raise KarpathyError(f"{where} ({entry['filename']}): every sentence needs a non-empty 'raw' text")
    image_id = entry.get("cocoid", entry.get("imgid", position))
    stem = str(entry["cocoid"]) if "cocoid" in entry else os.path.splitext(entry["filename"])[0]
    sentids = [int(s.get("sentid", -1)) for s in sentences]
    return KarpathyImage(str(entry["filename"]), str(entry.get("filepath", "")), int(image_id), stem,
                         tuple(s["raw"].strip() for s in sentences), tuple(sentids))


def load_document(path: str) -> dict:
    """The parsed Karpathy file (an object with an `images` list); errors name the file."""
    if not os.path.isfile(path):
        raise KarpathyError(f"Karpathy caption file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            document = json.load(f)
        except json.JSONDecodeError as err:
            raise KarpathyError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise KarpathyError(f"{path}: expected an object with an 'images' list (the Karpathy split format)")
    return document


def images_of(document: dict, image_set: str, path: str) -> list[KarpathyImage]:
    """The images of `image_set` (one split or several joined by '+') in file order."""
    wanted = parse_image_set(image_set)
    for n, entry in enumerate(document["images"]):
        if not isinstance(entry, dict) or "split" not in entry:
            raise KarpathyError(f"{path}: images[{n}] is not an object with a 'split'")
    images = [_image(entry, path, n) for n, entry in enumerate(document["images"]) if entry["split"] in wanted]
    if not images:
        raise KarpathyError(f"{path}: no image in split {image_set!r}")
    return images


def read_karpathy(path: str, image_set: str) -> list[KarpathyImage]:
    """`images_of(load_document(path), image_set, path)`."""
    return images_of(load_document(path), image_set, path)
