"""Retrieval's pre-flight data check (`Task.check_data`): the Karpathy caption file holds every image set the run
reads, and a spread sample (or all) of their box files reads with the features, boxes and image size the task needs."""
from __future__ import annotations

import os

from common.config_node import ConfigNode
from common.data.box_files import validate_box_file
from common.data.image_io import path_exists
from common.data.preflight import Problems, spread
from retrieval.karpathy import KarpathyError, images_of, load_document

READ_FIELDS = ("boxes", "features")  # what RetrievalDataset reads from every box file


def region_file_problems(path: str, key: str) -> list[str]:
    """Exists, the fields read decode and are finite, the boxes fit the image, and it has `features` and
    `image_w`/`image_h` (the whole-image box)."""
    if not path_exists(path):
        return [f"box file not found: {path} (config {key})"]
    try:
        record = validate_box_file(path, fields=READ_FIELDS)
    except Exception as err:  # noqa: BLE001 - any decoding error is a problem to report
        return [f"box file does not read: {path} ({err}) (config {key})"]
    missing = [field for field in ("features", "image_w", "image_h") if field not in record]
    if missing:
        return [f"box file {path} lacks {missing}: retrieval reads precomputed features and the image size "
                f"(config {key})"]
    return []


def check_retrieval_data(cfg: ConfigNode, out: Problems, samples: int | None, sections: tuple[str, ...]) -> None:
    """Every section's image set in DATASET.ANNOTATION_FILE, `samples` (None: all) box files of each under
    DATASET.BOX_FOLDER."""
    data = cfg.DATASET
    if not out.need(data.DATASET_PATH, "DATASET.DATASET_PATH", "dataset folder"):
        return
    annotation = os.path.join(data.DATASET_PATH, data.ANNOTATION_FILE)
    if not out.need(annotation, "DATASET.ANNOTATION_FILE", "Karpathy caption file"):
        return
    try:
        document = load_document(annotation)
    except KarpathyError as err:
        out.append(f"{err} (config DATASET.ANNOTATION_FILE)")
        return
    for section in sections:
        key = f"DATASET.{section}_IMAGE_SET"
        try:
            images = images_of(document, data[f"{section}_IMAGE_SET"], annotation)
        except KarpathyError as err:
            out.append(f"{err} (config {key}, DATASET.ANNOTATION_FILE)")
            continue
        for image in spread(images, samples):
            out.check(region_file_problems, os.path.join(data.DATASET_PATH, data.BOX_FOLDER, image.box_stem + ".json"),
                      "DATASET.BOX_FOLDER")
