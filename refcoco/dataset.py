"""RefCOCO+ samples, one per (ref, sentence): the image, candidate boxes with the whole image as box 0, the
expression's wordpiece ids, and a 0/1 label per candidate (IoU > 0.5 with the referred box, +1 convention).

Candidates (`boxes`): "gt" = every COCO instance box of the image (`annotations/instances_train2014.json`),
"proposal" = the MAttNet detections (`refcoco+/proposal/res101_coco_minus_refer_notime_dets.json`, or the
bottom-up box files with proposal_source "vg"), "proposal+gt" = both. COCO xywh boxes become xyxy with
x2 = x + w, as the original loader. Image sizes come from refcoco+/instances.json (same values as COCO's file).
"""
from __future__ import annotations

import logging
import os
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

from common.data.box_files import read_box_file
from common.data.boxes import box_iou_plus_one, check_boxes, warn_once, xywh_to_xyxy
from common.data.image_io import open_image_or_blank, read_json
from common.data.tokenizer import text_budget, truncate_to_budget
from common.data.transforms import VisualTransform, prepend_whole_image_box, swap_left_right
from refcoco.refer import Refer, load_coco_quietly

log = logging.getLogger(__name__)

BOX_MODES = ("gt", "proposal", "proposal+gt")
PROPOSAL_SOURCES = ("official", "vg")
DETECTIONS_FILE = os.path.join("refcoco+", "proposal", "res101_coco_minus_refer_notime_dets.json")
VG_BOX_FOLDER = os.path.join("vgbua_res101_precomputed", "trainval2014_resnet101_faster_rcnn_genome")
LABEL_IOU = 0.5  # a candidate is positive when IoU > 0.5 (strict), as the original's training labels
EXPRESSION_SPECIALS = 2  # [CLS] expression [SEP]


@dataclass(frozen=True)
class RefSample:
    """One expression: its ref, image and sentence, and the referred box in original xyxy pixels."""
    ref_id: int
    ann_id: int
    image_id: int
    sent_id: int
    tokens: tuple[str, ...]
    gt_box: tuple[float, float, float, float]


def image_path(data_path: str, image_id: int, zip_mode: bool = False) -> str:
    """`<data_path>/train2014/COCO_train2014_{id:012d}.jpg` (or inside `train2014.zip` in zip mode)."""
    name = f"COCO_train2014_{image_id:012d}.jpg"
    if zip_mode:
        return os.path.join(data_path, "train2014.zip") + f"@/train2014/{name}"
    return os.path.join(data_path, "train2014", name)


class RefCOCODataset(Dataset):
    """Items: image [3, H, W], boxes [N, 4] (resized xyxy, box 0 = whole image), im_info [4], expression_ids
    [L], labels [N] float 0/1, gt_box [4] (original xyxy), flipped, ref_id, image_id, index."""

    PAD_RULES = {"image": 0.0, "boxes": -2.0, "im_info": None, "expression_ids": 0, "labels": -1.0,
                 "gt_box": None, "flipped": None, "ref_id": None, "image_id": None, "index": None}

    def __init__(self, data_path: str, image_set: str, boxes: str, transform: VisualTransform, tokenizer,
                 proposal_source: str = "official", add_image_as_a_box: bool = True, zip_mode: bool = False,
                 refer: Refer | None = None, skip_unreadable_images: bool = False, max_positions: int = 512):
        if boxes not in BOX_MODES:
            raise ValueError(f"RefCOCO+ boxes must be one of {BOX_MODES} (DATASET.*_BOXES), found {boxes!r}")
        if proposal_source not in PROPOSAL_SOURCES:
            raise ValueError(f"DATASET.PROPOSAL_SOURCE must be one of {PROPOSAL_SOURCES}, found {proposal_source!r}")
        self.data_path, self.box_mode, self.proposal_source = data_path, boxes, proposal_source
        self.transform, self.tokenizer = transform, tokenizer
        self.add_image_as_a_box, self.zip_mode = add_image_as_a_box, zip_mode
        self.skip_unreadable_images, self.max_positions = skip_unreadable_images, int(max_positions)
        self.refer = refer if refer is not None else Refer(data_path, "refcoco+", "unc")
        self.samples = self._read_samples(image_set)
        if not self.samples:
            raise ValueError(f"{self.refer.refs_file}: no refs in image set {image_set!r}")
        image_ids = sorted({s.image_id for s in self.samples})
        self.gt_boxes = self._instance_boxes(image_ids) if "gt" in boxes else {}
        self.detections = self._detections(image_ids) if "proposal" in boxes and proposal_source == "official" else {}
        log.info("RefCOCO+ %s: %d expressions, %d images, boxes %s", image_set, len(self.samples), len(image_ids),
                 boxes)

    # ---- reading -----------------------------------------------------------------------------------------
    def _read_samples(self, image_set: str) -> list[RefSample]:
        samples = []
        for split in image_set.split("+"):
            for ref_id in self.refer.get_ref_ids(split):
                ref = self.refer.ref(ref_id)
                gt_xyxy = self.checked(xywh_to_xyxy(self.refer.get_ref_box(ref_id)), int(ref["image_id"]),
                                       self.refer.instances_file)
                gt = tuple(float(v) for v in gt_xyxy[0])
                for sent in ref["sentences"]:
                    samples.append(RefSample(int(ref_id), int(ref["ann_id"]), int(ref["image_id"]),
                                             int(sent["sent_id"]), tuple(sent["tokens"]), gt))
        return samples

    def _instance_boxes(self, image_ids: list[int]) -> dict[int, Tensor]:
        path = os.path.join(self.data_path, "annotations", "instances_train2014.json")
        coco = load_coco_quietly(path)
        out = {}
        for image_id in image_ids:
            if image_id not in coco.imgs:
                raise KeyError(f"{path}: image {image_id} (a RefCOCO+ image) is missing")
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
            out[image_id] = self.checked(xywh_to_xyxy([a["bbox"] for a in anns]), image_id, path)
        return out

    def checked(self, boxes: Tensor, image_id: int, source: str) -> Tensor:
        """`check_boxes` against the image's size in refcoco+/instances.json (errors and warnings name `source`)."""
        width, height = self.refer.image_size(image_id)
        return check_boxes(boxes, width, height, source)

    def _detections(self, image_ids: list[int]) -> dict[int, Tensor]:
        path = os.path.join(self.data_path, DETECTIONS_FILE)
        dets = read_json(path)
        if not isinstance(dets, list):
            raise ValueError(f"{path}: expected a list of detections, found {type(dets).__name__}")
        grouped: dict[int, list] = defaultdict(list)
        for position, det in enumerate(dets):
            if not isinstance(det, dict) or "image_id" not in det or "box" not in det:
                raise ValueError(f"{path}: detection #{position} lacks 'image_id' or 'box'")
            grouped[int(det["image_id"])].append(det["box"])
        missing = [i for i in image_ids if i not in grouped]
        if missing:
            raise ValueError(f"{path}: no detection for images {missing[:5]} ({len(missing)} in all); every "
                             f"RefCOCO+ image needs at least one")
        return {i: self.checked(xywh_to_xyxy(grouped[i]), i, path) for i in image_ids}

    def candidate_boxes(self, image_id: int) -> Tensor:
        """[K, 4] xyxy candidates in original pixels (no whole-image box): proposals first, then gt boxes."""
        parts = []
        if "proposal" in self.box_mode:
            if self.proposal_source == "official":
                parts.append(self.detections[image_id])
            else:
                path = os.path.join(self.data_path, VG_BOX_FOLDER, f"{image_id}.json")
                boxes = self.checked(torch.as_tensor(read_box_file(path, fields=("boxes",))["boxes"]).float(),
                                     image_id, path)
                if len(boxes) == 0:
                    warn_once(path, "no boxes", f"{path}: no proposals for image {image_id}")
                parts.append(boxes)
        if "gt" in self.box_mode:
            parts.append(self.gt_boxes[image_id])
        out = torch.cat(parts, 0)
        if len(out) == 0 and not self.add_image_as_a_box:
            raise ValueError(f"image {image_id}: no candidate box ({self.box_mode}) and DATASET.ADD_IMAGE_AS_A_BOX "
                             f"false")
        return out

    # ---- dataset protocol --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def describe(self, index: int) -> str:
        """The item in words, for messages: ref and sentence ids, image id and file."""
        sample = self.samples[index]
        return (f"ref {sample.ref_id} sentence {sample.sent_id} (image {sample.image_id}: "
                f"{image_path(self.data_path, sample.image_id, self.zip_mode)})")

    def aspect_groups(self) -> list[int]:
        """Group id per sample for aspect grouping: 0 landscape (h / w < 1), 1 portrait or square."""
        out = []
        for s in self.samples:
            width, height = self.refer.image_size(s.image_id)
            out.append(bisect_right([1.0], height / width))
        return out

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        image = open_image_or_blank(image_path(self.data_path, sample.image_id, self.zip_mode),
                                    self.refer.image_size(sample.image_id), self.skip_unreadable_images)
        width, height = image.size
        candidates = self.candidate_boxes(sample.image_id)
        if self.add_image_as_a_box:
            candidates = prepend_whole_image_box(candidates, width, height)
        gt_box = torch.tensor(sample.gt_box, dtype=torch.float32)
        out = self.transform(image, torch.cat([candidates, gt_box[None]], 0))
        boxes, moved_gt = out["boxes"][:-1], out["boxes"][-1:]
        labels = (box_iou_plus_one(boxes, moved_gt)[:, 0] > LABEL_IOU).float()
        tokens = list(sample.tokens)
        if out["flipped"]:
            tokens = swap_left_right(tokens)
        pieces = self.tokenizer.tokenize(" ".join(tokens))
        budget = text_budget(self.max_positions, EXPRESSION_SPECIALS, len(boxes))
        ids = truncate_to_budget(self.tokenizer.convert_tokens_to_ids(pieces), budget,
                                 f"ref {sample.ref_id} sentence {sample.sent_id}")
        ids = torch.tensor(ids, dtype=torch.long)
        return {"image": out["image"], "boxes": boxes, "im_info": out["im_info"], "expression_ids": ids,
                "labels": labels, "gt_box": gt_box, "flipped": torch.tensor(bool(out["flipped"])),
                "ref_id": sample.ref_id, "image_id": sample.image_id, "index": index}
