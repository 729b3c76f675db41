"""RefCOCO+'s pre-flight data check (`Task.check_data`): the refer files read as the dataset reads them
(`Refer`: the refs pickle through `load_refs_pickle`, cross-checked against `refcoco+/instances.json`), the COCO
instances and detections, and a spread sample (or all) of the images of the refs the run reads (and of their
bottom-up box files with `PROPOSAL_SOURCE: vg` proposals)."""
from __future__ import annotations

import os

from common.config_node import ConfigNode
from common.data.preflight import Problems, spread
from refcoco.dataset import DETECTIONS_FILE, VG_BOX_FOLDER, image_path
from refcoco.refer import Refer, split_matches


def read_refer(root: str, out: Problems) -> Refer | None:
    """`Refer(root)`, or None with the problem reported (a damaged pickle, a ref pointing nowhere, ...)."""
    files = [os.path.join(root, "refcoco+", name) for name in ("refs(unc).p", "instances.json")]
    if not all([out.need(path, "DATASET.DATASET_PATH") for path in files]):  # a list: report both when missing
        return None
    try:
        return Refer(root, "refcoco+", "unc")
    except Exception as err:  # noqa: BLE001 - ReferFormatError and friends name the file; report them all alike
        out.append(f"{err} (config DATASET.DATASET_PATH)")
        return None


def images_read(refer: Refer, cfg: ConfigNode, splits: tuple[str, ...]) -> dict[int, bool]:
    """Image id -> whether its vg box file is read, for the refs of the image sets in `splits`."""
    images: dict[int, bool] = {}
    for split in splits:
        boxes = str(cfg.DATASET[f"{split}_BOXES"])
        vg = "proposal" in boxes and cfg.DATASET.PROPOSAL_SOURCE == "vg"
        names = [n for n in str(cfg.DATASET[f"{split}_IMAGE_SET"]).split("+") if n]
        for ref in refer.refs.values():
            if any(split_matches(ref["split"], name) for name in names):
                images[int(ref["image_id"])] = images.get(int(ref["image_id"]), False) or vg
    return images


def check_refcoco_data(cfg: ConfigNode, out: Problems, samples: int | None, splits: tuple[str, ...]) -> None:
    """The files every split reads, then the images (and vg box files) of the refs of the splits read."""
    root = cfg.DATASET.DATASET_PATH
    if not out.need(root, "DATASET.DATASET_PATH", "dataset folder"):
        return
    refer = read_refer(root, out)
    out.json_file(os.path.join(root, "annotations", "instances_train2014.json"), "DATASET.DATASET_PATH",
                  ("images", "annotations"))
    out.json_file(os.path.join(root, DETECTIONS_FILE), "DATASET.DATASET_PATH")
    if refer is None:
        return
    zip_mode = bool(cfg.DATASET.ZIP_MODE)
    for image_id, with_boxes in spread(sorted(images_read(refer, cfg, splits).items()), samples):
        out.image(image_path(root, image_id, zip_mode), "DATASET.DATASET_PATH")
        if with_boxes:
            out.box_file(os.path.join(root, VG_BOX_FOLDER, f"{image_id}.json"), "DATASET.DATASET_PATH",
                         allow_empty=True, image_size=refer.image_size(image_id), fields=("boxes",))
