"""VCR's pre-flight data check (`Task.check_data`): every line of the annotation jsonl of every split the run reads
(parsed as the dataset parses it), and a spread sample (or all) of its images and metadata files, read as
`VCRDataset` reads them: the image decodes, the metadata has boxes and segms for every object, boxes in the image."""
from __future__ import annotations

import os

import numpy as np

from common.config_node import ConfigNode
from common.data.boxes import check_boxes
from common.data.file_checks import image_problems
from common.data.image_io import path_exists, read_json
from common.data.preflight import Problems, spread
from vcr.dataset import parse_vcr_record


def metadata_problems(path: str, objects: int, where: str, key: str) -> list[str]:
    """The metadata json of an image: `boxes` [K, 5] and `segms` for at least `objects` objects, boxes valid for
    its `width` x `height`."""
    if not path_exists(path):
        return [f"metadata file not found: {path} (config {key})"]
    try:
        meta = read_json(path)
        boxes = np.asarray(meta["boxes"], dtype=np.float32).reshape(-1, 5)
        if len(boxes) < objects or len(meta["segms"]) < objects:
            return [f"{path}: {len(boxes)} boxes and {len(meta['segms'])} segms but {where} names {objects} objects "
                    f"(config {key})"]
        if "width" in meta and "height" in meta:
            check_boxes(boxes, int(meta["width"]), int(meta["height"]), path)
    except Exception as err:  # noqa: BLE001 - KeyError, ValueError, BoxError: all are problems to report
        return [f"metadata file does not read: {path} ({type(err).__name__}: {err}) (config {key})"]
    return []


def image_and_metadata_problems(image: str, metadata: str, objects: int, where: str, key: str) -> list[str]:
    return image_problems(image, key) + metadata_problems(metadata, objects, where, key)


def check_vcr_data(cfg: ConfigNode, out: Problems, samples: int | None, splits: tuple[str, ...]) -> None:
    """`DATASET.<SPLIT>_ANNOTATION_FILE` parses line by line as the dataset parses it; sampled (or all) `img_fn`
    images and `metadata_fn` files read."""
    ds = cfg.DATASET
    root = ds.DATASET_PATH
    if not out.need(root, "DATASET.DATASET_PATH", "dataset folder"):
        return
    for split in splits:
        key = f"DATASET.{split}_ANNOTATION_FILE"
        path = os.path.join(root, ds[f"{split}_ANNOTATION_FILE"])
        records = []
        for number, row in out.jsonl_records(path, key):
            try:
                records.append(parse_vcr_record(row, f"{path}:{number}", test_mode=split == "TEST"))
            except (ValueError, TypeError) as err:
                out.append(f"{err} (config {key})")
        image_root = os.path.join(root, ds[f"{split}_IMAGE_SET"])
        objects: dict[tuple[str, str], tuple[int, str]] = {}  # one check per image, for its largest object list
        for record in records:
            files = (record.img_fn, record.metadata_fn)
            if files not in objects or objects[files][0] < len(record.objects):
                objects[files] = (len(record.objects), record.where)
        for (img_fn, metadata_fn), (count, where) in spread(sorted(objects.items()), samples):
            out.check(image_and_metadata_problems, os.path.join(image_root, img_fn),
                      os.path.join(image_root, metadata_fn), count, where, f"DATASET.{split}_IMAGE_SET")
