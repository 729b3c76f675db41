"""The inputs `data/make_shards.py` reads, each cut into numbered output shards: the Conceptual Captions layout
(folders or zips + `{split}_frcnn.json`, also what `captions_to_pretrain.py` writes), img2dataset's webdataset
output (boxes from box files or from `extract_boxes.py`'s detector) and a text corpus.

`samples(number)` yields (key, members, None) for a sample to write and (key, None, reason) for one skipped.
Shard k of a record input holds records [k * M, (k + 1) * M), whatever is skipped, so every shard can be (re)made
on its own: resuming and splitting the work over machines need no history.
"""
from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator

import numpy as np
from PIL import Image

from common.data.box_files import read_box_file
from common.data.captions import ANNOTATION_FILES, folder_path, read_caption_index
from common.data.image_io import read_bytes
from common.data.shards import ShardError, expand_shards, iter_shard
from pretrain.datasets.general_corpus import read_corpus_lines
from pretrain.datasets.shard_format import (
    PIL_EXTENSIONS,
    caption_members,
    decode_image,
    image_member,
    sample_index,
    sample_key,
)

Item = tuple[str, dict | None, str | None]
READ_ERRORS = (OSError, ValueError, KeyError, Image.DecompressionBombError)


def image_fields(data: bytes, where: str, decode: bool) -> tuple[str, tuple[int, int]]:
    """(tar extension of the image's real format, (w, h)); `decode` checks that the whole image decodes."""
    size = decode_image(data, where).size if decode else None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return PIL_EXTENSIONS.get(image.format, "img"), size or image.size
    except (OSError, ValueError) as err:
        raise ValueError(f"{where}: not a readable image ({err})") from err


def box_arrays(path: str, with_features: bool) -> dict:
    """boxes, classes (required: the MVRC target) and, when asked, features of a box file."""
    fields = ("boxes", "classes", "features") if with_features else ("boxes", "classes")
    record = read_box_file(path, fields=fields, feature_dim=None)
    for field in fields[1:]:
        if field not in record:
            raise ValueError(f"{path}: box file without '{field}'")
    return record


def caption_sample(key: str, index: int, words: list[str], image: bytes | None, boxes: dict, content: str,
                   source: str, decode: bool = True) -> dict:
    """The members of one image-caption sample; the size is the box file's, else the image's."""
    extension, size = ("jpg", None) if image is None else image_fields(image, source, decode)
    width, height = boxes.get("image_w"), boxes.get("image_h")
    if width is None or height is None:
        if size is None:
            raise ValueError(f"{source}: the box file has no image_w/image_h and the image is not read")
        width, height = size
    meta = {"caption": [str(w) for w in words], "index": int(index), "image_w": int(width), "image_h": int(height),
            "source": source}
    return caption_members(key, meta, boxes["boxes"], boxes["classes"], image if content != "features" else None,
                           extension, boxes.get("features") if content != "images" else None)


class RecordInput:
    """Shards of consecutive records: shard k holds records [k * M, (k + 1) * M)."""

    def __init__(self, count: int, samples_per_shard: int):
        self.count, self.per_shard = int(count), int(samples_per_shard)

    def shard_numbers(self) -> list[int]:
        return list(range(math.ceil(self.count / self.per_shard)))

    def shard_size(self, number: int) -> int:
        return min(self.per_shard, self.count - number * self.per_shard)

    def samples(self, number: int) -> Iterator[Item]:
        for index in range(number * self.per_shard, number * self.per_shard + self.shard_size(number)):
            key = sample_key(index)
            try:
                yield key, self.sample(key, index), None
            except READ_ERRORS as err:
                yield key, None, str(err)

    def sample(self, key: str, index: int) -> dict:
        raise NotImplementedError


class CaptionFolderInput(RecordInput):
    """`{root}/{split}_frcnn.json` with its images and box files, in folders or (zip_mode) stored zips."""

    def __init__(self, root: str, split: str, zip_mode: bool, content: str, samples_per_shard: int,
                 decode: bool = True):
        if split not in ANNOTATION_FILES:
            raise ValueError(f"--split {split!r} is not one of {sorted(ANNOTATION_FILES)}")
        self.records = read_caption_index(os.path.join(root, ANNOTATION_FILES[split]))
        self.root, self.zip_mode, self.content, self.decode = root, zip_mode, content, decode
        super().__init__(len(self.records), samples_per_shard)
        self.description = f"{os.path.join(root, ANNOTATION_FILES[split])} ({'zips' if zip_mode else 'folders'})"

    def resolve(self, stored: str) -> str:
        return os.path.join(self.root, stored if self.zip_mode else folder_path(stored))

    def sample(self, key: str, index: int) -> dict:
        record = self.records[index]
        boxes = box_arrays(self.resolve(record["frcnn"]), self.content != "images")
        needs_image = self.content != "features" or boxes.get("image_w") is None
        image = read_bytes(self.resolve(record["image"])) if needs_image else None
        return caption_sample(key, index, record["caption"], image, boxes, self.content, record["image"],
                              self.decode and self.content != "features")


class CorpusInput(RecordInput):
    """A '+'-joined list of text files: one sample (`txt`) per stripped non-empty line."""

    def __init__(self, ann_file: str, samples_per_shard: int):
        self.lines = read_corpus_lines(ann_file)
        super().__init__(len(self.lines), samples_per_shard)
        self.description, self.content = ann_file, "text"

    def sample(self, key: str, index: int) -> dict:
        return {"__key__": key, "txt": self.lines[index].encode("utf-8")}


class WebDatasetInput:
    """img2dataset shards (`<key>.jpg` + `<key>.txt` caption): output shard k is input shard k with boxes added,
    from `{boxes_dir}/{key}.json` or, without `boxes_dir`, from `detector` (a `ShardDetector`)."""

    def __init__(self, pattern: str, content: str, boxes_dir: str | None = None, detector=None,
                 batch_size: int = 8):
        self.inputs = expand_shards(pattern, key="--input")
        if boxes_dir is None and detector is None:
            raise ValueError("img2dataset input needs --boxes-dir or a detector (--weights)")
        if detector is not None and content != "images":
            raise ValueError("--content features/both needs box files with features (--boxes-dir)")
        self.content, self.boxes_dir, self.detector, self.batch_size = content, boxes_dir, detector, batch_size
        self.description = pattern

    def shard_numbers(self) -> list[int]:
        return list(range(len(self.inputs)))

    def shard_size(self, number: int) -> int:
        return 0  # unknown until read

    def samples(self, number: int) -> Iterator[Item]:
        pending: list[tuple] = []
        last = None
        try:
            for sample in iter_shard(self.inputs[number]):
                last = sample["__key__"]
                item = self._prepare(sample)
                if item[1] is None:
                    yield item
                elif self.boxes_dir is not None:
                    path = os.path.join(self.boxes_dir, f"{last}.json")
                    yield self._finish(item, lambda path=path: box_arrays(path, self.content != "images"))
                else:
                    pending.append(item)
                    if len(pending) == self.batch_size:
                        yield from self._detect(pending)
                        pending = []
        except ShardError as err:  # the samples read so far are kept; the rest of the input shard is lost
            yield f"{os.path.basename(self.inputs[number])}:*", None, str(err)
        yield from self._detect(pending)

    def _prepare(self, sample: dict) -> tuple:
        key, where = sample["__key__"], f"{sample['__shard__']} key {sample['__key__']!r}"
        try:
            text = sample.get("txt", b"").decode("utf-8").strip()
            if not text:
                raise ValueError(f"{where}: empty or missing caption ('txt')")
            image = image_member(sample, where)
            return key, (text.split(), image, decode_image(image, where), where), None
        except READ_ERRORS as err:
            return key, None, str(err)

    def _finish(self, item: tuple, boxes) -> Item:
        key, (words, image, _, where) = item[0], item[1]
        try:
            index = sample_index(key)
            return key, caption_sample(key, index, words, image, boxes(), self.content, where, decode=False), None
        except READ_ERRORS as err:
            return key, None, str(err)

    def _detect(self, pending: list[tuple]) -> Iterator[Item]:
        if not pending:
            return
        found = self.detector([item[1][2] for item in pending])
        for item, (boxes, classes) in zip(pending, found, strict=True):
            width, height = item[1][2].size
            record = {"boxes": boxes, "classes": classes, "image_w": width, "image_h": height}
            yield self._finish(item, lambda record=record: record)


class ShardDetector:
    """`data/extract_boxes.py`'s detector on decoded images: [(boxes [K, 4], classes [K, C]), ...]. Built on
    first use, so each worker process builds its own."""

    def __init__(self, detector: str, weights: str, device: str = "cpu", max_boxes: int = 36, min_boxes: int = 10,
                 min_score: float = 0.2, min_size: int | None = None, max_size: int | None = None):
        self.options = dict(detector=detector, weights=weights, min_size=min_size, max_size=max_size)
        self.device, self.limits, self.model = device, (max_boxes, min_boxes, min_score), None

    def __call__(self, images: list[Image.Image]) -> list[tuple[np.ndarray, np.ndarray]]:
        import torch
        from torchvision.transforms.functional import pil_to_tensor

        from data.extract_boxes import build_detector, detect

        if self.model is None:
            o = self.options
            self.model = build_detector(o["detector"], o["weights"], o["min_size"], o["max_size"]).to(self.device)
        tensors = [pil_to_tensor(image).float().div(255.0).to(self.device) for image in images]
        with torch.no_grad():
            found = detect(self.model, tensors, *self.limits)
        return [(d["boxes"].cpu().numpy(), d["classes"].cpu().numpy()) for d in found]
