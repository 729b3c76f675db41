"""VCR v1.0 reader: jsonl questions + per-image metadata (boxes, polygons) -> dict items for Q->A or QA->R.

An item holds the image, the boxes (whole-image box first), their 14x14 instance masks and COCO classes, and the
4 choices as [4, L] wordpiece ids/tags: `question_*` is the first segment (question, or question + answer for
QA2R) and `answer_*` the second (answer, or rationale). The module adds [CLS]/[SEP]. Flipping leaves the text
as it is ("left" stays "left"), as the original VCR loader did; TRAIN.FLIP_PROB applies unchanged.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import Tensor
from torch.utils.data import Dataset

from common.data.boxes import check_boxes
from common.data.image_io import open_image_or_blank, read_json
from common.data.tokenizer import text_budget
from common.data.transforms import VisualTransform, prepend_whole_image_box
from vcr.text import (
    TaggedPieces,
    expand_tokens,
    object_indices_in,
    relevant_object_order,
    truncate_pair,
    truncate_triple,
)

log = logging.getLogger(__name__)

# `__background__` + the 80 COCO classes with spaces removed (the category vocabulary of the original loaders).
COCO_CATEGORIES = (
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "trafficlight", "firehydrant", "stopsign", "parkingmeter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sportsball", "kite", "baseballbat", "baseballglove", "skateboard", "surfboard", "tennisracket",
    "bottle", "wineglass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
    "carrot", "hotdog", "pizza", "donut", "cake", "chair", "couch", "pottedplant", "bed", "diningtable", "toilet", "tv",
    "laptop", "mouse", "remote", "keyboard", "cellphone", "microwave", "oven", "toaster", "sink", "refrigerator",
    "book", "clock", "vase", "scissors", "teddybear", "hairdrier", "toothbrush",
)
CATEGORY_TO_INDEX = {name: i for i, name in enumerate(COCO_CATEGORIES)}
TASKS = ("Q2A", "QA2R")
NUM_CHOICES = 4
PAIR_SPECIALS = 3  # [CLS] first [SEP] second [SEP]


@dataclass(frozen=True)
class VCRRecord:
    """One jsonl line; `where` ("file:line annot_id=...") is used in error messages."""

    annot_id: str
    where: str
    objects: list
    img_fn: str
    metadata_fn: str
    question: list
    answer_choices: list
    rationale_choices: list
    answer_label: int
    rationale_label: int


def read_vcr_jsonl(path: str, test_mode: bool) -> list[VCRRecord]:
    """Parse and check a VCR jsonl file: fields present, 4 choices, object names known, indices in range."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VCR annotation file not found: {path}")
    records = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{line_number}: not a valid JSON line ({err})") from err
                records.append(parse_vcr_record(raw, f"{path}:{line_number}", test_mode))
    return records


def parse_vcr_record(raw: dict, position: str, test_mode: bool) -> VCRRecord:
    """One parsed jsonl line (`position` = "file:line") as a VCRRecord; ValueError naming the line otherwise."""
    if not isinstance(raw, dict):
        raise ValueError(f"{position}: expected a JSON object, found {type(raw).__name__}")
    where = f"{position} annot_id={raw.get('annot_id')!r}"
    fields = ["annot_id", "objects", "img_fn", "metadata_fn", "question", "answer_choices", "rationale_choices"]
    missing = [k for k in fields + ([] if test_mode else ["answer_label", "rationale_label"]) if k not in raw]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    for key in ("answer_choices", "rationale_choices"):
        if len(raw[key]) != NUM_CHOICES:
            raise ValueError(f"{where}: {key} has {len(raw[key])} entries, expected {NUM_CHOICES}")
    unknown = sorted({name for name in raw["objects"] if name not in CATEGORY_TO_INDEX})
    if unknown:
        raise ValueError(f"{where}: object names {unknown} are not COCO category names (without spaces)")
    for tokens in [raw["question"], *raw["answer_choices"], *raw["rationale_choices"]]:
        bad = [i for i in object_indices_in(tokens) if not 0 <= i < len(raw["objects"])]
        if bad:
            raise ValueError(f"{where}: object index {bad[0]} out of range ({len(raw['objects'])} objects)")
    return VCRRecord(raw["annot_id"], where, list(raw["objects"]), raw["img_fn"], raw["metadata_fn"],
                     raw["question"], raw["answer_choices"], raw["rationale_choices"],
                     int(raw.get("answer_label", -1)), int(raw.get("rationale_label", -1)))


def polygons_to_mask(polygons: list, box, size: int) -> np.ndarray:
    """Rasterise an object's polygons ([[x, y], ...] in image pixels) into a size x size mask of its box."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    scale_x, scale_y = size / max(x2 - x1, 1e-6), size / max(y2 - y1, 1e-6)
    flat = []
    for polygon in polygons:
        points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        if len(points) >= 3:
            points = (points - [x1, y1]) * [scale_x, scale_y]
            flat.append(points.reshape(-1).tolist())
    if not flat:
        return np.zeros((size, size), dtype=np.float32)
    rle = mask_utils.merge(mask_utils.frPyObjects(flat, size, size))
    return mask_utils.decode(rle).astype(np.float32)


class VCRDataset(Dataset):
    """VCR for one task ("Q2A" or "QA2R"); in QA2R test mode item k is annotation k // 4 conditioned on answer k % 4.

    `tokenize(word) -> wordpieces` and `to_ids(wordpieces) -> ids` come from the BERT vocabulary. The truncation
    rules (vcr/text.py) apply in every mode; the original skipped them for QA2R test items.
    """

    PAD_RULES = {"image": 0.0, "boxes": -2.0, "segms": 0.0, "classes": -1, "im_info": None,
                 "question_ids": 0, "question_tags": 0, "answer_ids": 0, "answer_tags": 0, "label": None,
                 "index": None}

    def __init__(self, ann_file: str, image_root: str, task: str, tokenize, to_ids, transform: VisualTransform,
                 test_mode: bool = False, seq_len: int = 64, mask_size: int = 14, add_image_as_a_box: bool = True,
                 only_use_relevant_dets: bool = False, skip_unreadable_images: bool = False,
                 max_positions: int = 512):
        if task not in TASKS:
            raise ValueError(f"DATASET.TASK must be one of {TASKS} for VCR, got {task!r}")
        self.ann_file, self.image_root, self.task, self.test_mode = ann_file, image_root, task, test_mode
        self.tokenize, self.to_ids, self.transform = tokenize, to_ids, transform
        self.seq_len, self.mask_size = seq_len, mask_size
        self.add_image_as_a_box, self.only_use_relevant_dets = add_image_as_a_box, only_use_relevant_dets
        self.skip_unreadable_images, self.max_positions = skip_unreadable_images, int(max_positions)
        self.records = read_vcr_jsonl(ann_file, test_mode)
        self.expand_answers = task == "QA2R" and test_mode
        log.info("VCR %s (%s%s): %d questions", ann_file, task, ", test" if test_mode else "", len(self.records))

    def __len__(self) -> int:
        return len(self.records) * (NUM_CHOICES if self.expand_answers else 1)

    def record_and_answer(self, index: int) -> tuple[VCRRecord, int]:
        """The annotation behind item `index` and the answer it is conditioned on (QA2R; else the label)."""
        if self.expand_answers:
            return self.records[index // NUM_CHOICES], index % NUM_CHOICES
        record = self.records[index]
        return record, record.answer_label

    def sample_lengths(self) -> list[int]:
        """Per item: words of the question (+ the answer, QA2R) and of its longest choice, plus its objects: a cheap
        proxy of the packed length (no tokenising, no file read) for TRAIN.LENGTH_BUCKETING."""
        lengths = []
        for index in range(len(self)):
            record, answer = self.record_and_answer(index)
            first = len(record.question) + (len(record.answer_choices[answer]) if self.task == "QA2R" else 0)
            choices = record.answer_choices if self.task == "Q2A" else record.rationale_choices
            lengths.append(first + max(len(c) for c in choices) + len(record.objects))
        return lengths

    def describe(self, index: int) -> str:
        """The item in words, for messages: jsonl file and line, annot_id, image (and the conditioning answer)."""
        record, answer = self.record_and_answer(index)
        condition = f", conditioned on answer {answer}" if self.expand_answers else ""
        return f"{record.where} (image {os.path.join(self.image_root, record.img_fn)}{condition})"

    # ---- visual side ----------------------------------------------------------------------------------------
    def load_objects(self, record: VCRRecord) -> tuple[np.ndarray, list, list[int]]:
        """Metadata boxes [K, 5], polygons and the kept object order (all, or relevant ones by first mention)."""
        meta_path = os.path.join(self.image_root, record.metadata_fn)
        meta = read_json(meta_path)
        boxes = np.asarray(meta["boxes"], dtype=np.float32).reshape(-1, 5)
        referenced = [i for tokens in [record.question, *record.answer_choices, *record.rationale_choices]
                      for i in object_indices_in(tokens)]
        if referenced and max(referenced) >= len(boxes):
            raise ValueError(f"{record.where}: object index {max(referenced)} is beyond the {len(boxes)} boxes of "
                             f"{meta_path}")
        if len(boxes) < len(record.objects) or len(meta["segms"]) < len(record.objects):
            raise ValueError(f"{record.where}: {len(record.objects)} objects but {meta_path} has {len(boxes)} boxes "
                             f"and {len(meta['segms'])} segms")
        if self.only_use_relevant_dets:
            order = relevant_object_order([record.question, *record.answer_choices, *record.rationale_choices])
        else:
            order = list(range(len(record.objects)))
        return boxes, meta["segms"], order

    def image_size(self, record: VCRRecord) -> tuple[int, int] | None:
        """(width, height) from the metadata file, or None when it does not say."""
        meta = read_json(os.path.join(self.image_root, record.metadata_fn))
        return (int(meta["width"]), int(meta["height"])) if "width" in meta and "height" in meta else None

    def visual_item(self, record: VCRRecord, boxes: np.ndarray, segms: list, order: list[int]) -> dict:
        path = os.path.join(self.image_root, record.img_fn)
        size = self.image_size(record) if self.skip_unreadable_images else None
        image = open_image_or_blank(path, size, self.skip_unreadable_images)
        width, height = image.size
        boxes = check_boxes(boxes, width, height, os.path.join(self.image_root, record.metadata_fn))
        kept = boxes[order]
        classes = [CATEGORY_TO_INDEX[record.objects[i]] for i in order]
        masks = [polygons_to_mask(segms[i], boxes[i], self.mask_size) for i in order]
        masks = np.stack(masks) if masks else np.zeros((0, self.mask_size, self.mask_size), dtype=np.float32)
        if self.add_image_as_a_box:
            kept = prepend_whole_image_box(kept, width, height, extra=(1.0,))
            classes = [0] + classes
            masks = np.concatenate([np.ones((1, self.mask_size, self.mask_size), dtype=np.float32), masks])
        out = self.transform(image, kept[:, :4], torch.from_numpy(masks))
        return {"image": out["image"], "boxes": out["boxes"], "segms": out["masks"].float(),
                "classes": torch.tensor(classes, dtype=torch.long), "im_info": out["im_info"]}

    # ---- text side ------------------------------------------------------------------------------------------
    def tagged(self, tokens: list, record: VCRRecord, order: list[int]) -> TaggedPieces:
        offset = 1 if self.add_image_as_a_box else 0
        position = {obj: i for i, obj in enumerate(order)}
        return expand_tokens(tokens, record.objects, self.tokenize, lambda i: position[i] + offset,
                             non_object_tag=0 if self.add_image_as_a_box else -1)

    def text_limit(self, record: VCRRecord, num_boxes: int) -> int:
        """DATASET.SEQ_LEN, or less when the item's boxes leave less room in the position table (logged)."""
        room = text_budget(self.max_positions, PAIR_SPECIALS, num_boxes)
        if room < self.seq_len:
            log.warning("%s: %d boxes leave room for %d wordpieces in NETWORK.VLBERT.max_position_embeddings, "
                        "fewer than DATASET.SEQ_LEN %d; truncating to %d", record.where, num_boxes, room,
                        self.seq_len, room)
            if room < 2:
                raise ValueError(f"{record.where}: {num_boxes} boxes fill NETWORK.VLBERT.max_position_embeddings")
        return min(self.seq_len, room)

    def choice_pairs(self, record: VCRRecord, answer: int, order: list[int],
                     num_boxes: int = 0) -> list[tuple[TaggedPieces, TaggedPieces]]:
        """The 4 (first segment, second segment) pairs after truncation; shared pieces are copied, never popped."""
        limit = self.text_limit(record, num_boxes)
        question = self.tagged(record.question, record, order)
        if self.task == "Q2A":
            return [truncate_pair(question, self.tagged(a, record, order), limit) for a in record.answer_choices]
        answer_pieces = self.tagged(record.answer_choices[answer], record, order)
        pairs = []
        for rationale in record.rationale_choices:
            q, a, r = truncate_triple(question, answer_pieces, self.tagged(rationale, record, order), limit)
            pairs.append((q + a, r))
        return pairs

    def pad_choices(self, segments: list[TaggedPieces]) -> tuple[Tensor, Tensor]:
        """4 tagged piece lists -> ids [4, L] and tags [4, L], zero-padded."""
        width = max(1, max(len(s) for s in segments))
        ids = torch.zeros(len(segments), width, dtype=torch.long)
        tags = torch.zeros(len(segments), width, dtype=torch.long)
        for row, segment in enumerate(segments):
            if segment:
                ids[row, : len(segment)] = torch.tensor(self.to_ids([p for p, _ in segment]), dtype=torch.long)
                tags[row, : len(segment)] = torch.tensor([t for _, t in segment], dtype=torch.long)
        return ids, tags

    def __getitem__(self, index: int) -> dict:
        record, answer = self.record_and_answer(index)
        boxes, segms, order = self.load_objects(record)
        item = self.visual_item(record, boxes, segms, order)
        pairs = self.choice_pairs(record, answer, order, num_boxes=len(item["boxes"]))
        item["question_ids"], item["question_tags"] = self.pad_choices([first for first, _ in pairs])
        item["answer_ids"], item["answer_tags"] = self.pad_choices([second for _, second in pairs])
        if not self.test_mode:
            label = record.answer_label if self.task == "Q2A" else record.rationale_label
            item["label"] = torch.tensor(label, dtype=torch.long)
        item.update(annot_id=record.annot_id, answer_index=answer, index=index)
        return item
