"""RefCOCO+'s pre-flight data check (`Task.check_data`): the refer files, the COCO instances and detections, and
a spread sample of the images (and of the box files in precomputed mode)."""
from __future__ import annotations

import os

from common.config_node import ConfigNode
from common.data.preflight import Problems, spread
from refcoco.dataset import DETECTIONS_FILE, VG_BOX_FOLDER, image_path


def check_refcoco_data(cfg: ConfigNode, out: Problems, samples: int, splits: tuple[str, ...]) -> None:
    """Every split reads the same files (refs(unc).p names the split of each ref), so `splits` is not needed."""
    root = cfg.DATASET.DATASET_PATH
    if not out.need(root, "DATASET.DATASET_PATH", "dataset folder"):
        return
    out.need(os.path.join(root, "refcoco+", "refs(unc).p"), "DATASET.DATASET_PATH")
    instances = out.json_file(os.path.join(root, "annotations", "instances_train2014.json"), "DATASET.DATASET_PATH",
                              ("images", "annotations"))
    out.json_file(os.path.join(root, DETECTIONS_FILE), "DATASET.DATASET_PATH")
    zip_mode = bool(cfg.DATASET.ZIP_MODE)
    for image in spread((instances or {}).get("images", []), samples):
        out.image(image_path(root, image["id"], zip_mode), "DATASET.DATASET_PATH")
        if cfg.NETWORK.IMAGE_FEAT_PRECOMPUTED:
            out.box_file(os.path.join(root, VG_BOX_FOLDER, f"{image['id']}.json"), "DATASET.DATASET_PATH")
