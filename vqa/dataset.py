"""VQA v2 over the official files (parsed by vqa/files.py): questions, annotations (soft answer targets), COCO image
sizes and the bottom-up box files (boxes always; features in precomputed mode), in the layout of PREPARE_DATA.md.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from common.data.box_files import BoxFileError, read_box_file, whole_image_feature
from common.data.boxes import BoxError, check_boxes, warn_once
from common.data.image_io import open_image_or_blank, path_exists
from common.data.tokenizer import text_budget, truncate_to_budget
from common.data.transforms import VisualTransform, prepend_whole_image_box, swap_left_right
from vqa.files import VQADataError, read_annotations, read_image_sizes, read_questions
from vqa.vqa_eval import normalize_answer, score_count

log = logging.getLogger(__name__)

UNK = "<unk>"
QUESTION_SPECIALS = 4  # [CLS] question [SEP] [MASK] [SEP]
# image set -> (image folder, COCO size file, box-file folder prefix)
IMAGE_SETS = {
    "train2014": ("train2014", "annotations/instances_train2014.json", "trainval2014"),
    "val2014": ("val2014", "annotations/instances_val2014.json", "trainval2014"),
    "minival2014": ("val2014", "annotations/instances_val2014.json", "trainval2014"),
    "valminusminival2014": ("val2014", "annotations/instances_val2014.json", "trainval2014"),
    "test2015": ("test2015", "annotations/image_info_test2015.json", "test2015"),
    "test-dev2015": ("test2015", "annotations/image_info_test2015.json", "test2015"),
}
BOX_SETS = ("36", "10-100ada")


@dataclass(frozen=True)
class VQASample:
    question_id: int
    image_id: int
    image_set: str
    question: str
    answers: tuple[str, ...] | None  # the 10 human answers; None for test splits


def read_answer_vocab(path: str, expected_size: int | None = None) -> list[str]:
    """`answers_vqa.txt`: one answer a line, lower-cased and stripped, blank lines dropped; must hold `<unk>`."""
    if not os.path.isfile(path):
        raise VQADataError(f"answer vocabulary not found: {path} (DATASET.ANSWER_VOCAB_FILE)")
    with open(path, encoding="utf-8") as f:
        answers = [line.strip().lower() for line in f if line.strip()]
    if UNK not in answers:
        raise VQADataError(f"{path}: the answer vocabulary must contain {UNK}")
    if expected_size is not None and len(answers) != expected_size:
        raise VQADataError(f"{path}: {len(answers)} answers but DATASET.ANSWER_VOCAB_SIZE is {expected_size}")
    return answers


def answer_index(vocab: list[str]) -> dict[str, int]:
    """Normalised answer -> vocabulary index (the first entry wins when two normalise alike); `<unk>` kept as is."""
    index: dict[str, int] = {}
    for i, answer in enumerate(vocab):
        index.setdefault(answer if answer == UNK else normalize_answer(answer), i)
    return index


def soft_scores(answers: tuple[str, ...], index: dict[str, int], vocab_size: int) -> torch.Tensor:
    """[vocab_size] official accuracy of each distinct (normalised) human answer; out-of-vocab and `<unk>` score 0."""
    scores = torch.zeros(vocab_size)
    counts: dict[int, int] = {}
    for answer in answers:
        i = index.get(normalize_answer(answer))
        if i is not None:
            counts[i] = counts.get(i, 0) + 1
    for i, k in counts.items():
        scores[i] = score_count(k, len(answers))
    unk = index.get(UNK)
    if unk is not None:
        scores[unk] = 0.0
    return scores


def no_target_share(samples: list[VQASample], index: dict[str, int]) -> tuple[int, int]:
    """(questions whose human answers are all outside the vocabulary (or `<unk>`), annotated questions): the
    former train on an all-zero target."""
    known: dict[str, bool] = {}  # normalisation is slow; VQA repeats answers a lot
    unk = index.get(UNK)

    def in_vocab(answer: str) -> bool:
        if answer not in known:
            known[answer] = index.get(normalize_answer(answer), unk) != unk
        return known[answer]

    annotated = [s for s in samples if s.answers is not None]
    return sum(not any(in_vocab(a) for a in s.answers) for s in annotated), len(annotated)


class VQADataset(Dataset):
    """Items: image [3, H, W] (end-to-end only) or box_features [N, 2048] (precomputed), boxes [N, 4] (resized
    xyxy, box 0 = whole image), im_info [4], question [L] (wordpiece ids, no specials), answer_scores [V]
    (splits with annotations), question_id, index."""

    PAD_RULES = {"image": 0.0, "boxes": -2.0, "box_features": 0.0, "im_info": None, "question": 0,
                 "answer_scores": None, "question_id": None, "index": None}

    def __init__(self, image_set: str, data_path: str, answer_vocab_file: str, transform: VisualTransform,
                 tokenizer, precomputed: bool = True, boxes: str = "36", add_image_as_a_box: bool = True,
                 zip_mode: bool = False, vocab_size: int | None = None, use_imdb: bool = False,
                 skip_unreadable_images: bool = False, max_positions: int = 512,
                 max_no_target_fraction: float | None = None):
        if use_imdb:
            raise VQADataError("DATASET.USE_IMDB true (pythia imdb_*.npy files) is not supported; set "
                               "DATASET.USE_IMDB false to read the official VQA v2 json files")
        if boxes not in BOX_SETS:
            raise VQADataError(f"DATASET.BOXES must be one of {BOX_SETS}, found {boxes!r}")
        self.data_path, self.transform, self.tokenizer = data_path, transform, tokenizer
        self.precomputed, self.boxes, self.zip_mode = precomputed, boxes, zip_mode
        self.add_image_as_a_box, self.skip_unreadable_images = add_image_as_a_box, skip_unreadable_images
        self.max_positions = int(max_positions)
        self.answer_vocab = read_answer_vocab(answer_vocab_file, vocab_size)
        self.answer_to_index = answer_index(self.answer_vocab)
        self.image_sets = [s for s in image_set.split("+") if s]
        unknown = [s for s in self.image_sets if s not in IMAGE_SETS]
        if unknown or not self.image_sets:
            raise VQADataError(f"unknown VQA image set(s) {unknown or image_set!r}; expected '+'-joined names "
                               f"from {sorted(IMAGE_SETS)}")
        self.image_sizes: dict[str, dict[int, tuple[int, int]]] = {}
        self.samples = [s for name in self.image_sets for s in self._read_split(name)]
        with_answers = {s.image_set for s in self.samples if s.answers is not None}
        if with_answers and len(with_answers) != len(self.image_sets):
            raise VQADataError(f"image set {image_set!r} mixes splits with and without annotations")
        self.has_answers = bool(with_answers)
        log.info("VQA %s: %d questions from %s", image_set, len(self.samples), data_path)
        if self.has_answers:
            self._report_no_target(image_set, answer_vocab_file, max_no_target_fraction)

    def _report_no_target(self, image_set: str, vocab_file: str, limit: float | None) -> None:
        """Log the share of questions without any in-vocabulary answer; refuse above DATASET.MAX_NO_TARGET_FRACTION."""
        missing, total = no_target_share(self.samples, self.answer_to_index)
        share = missing / max(total, 1)
        log.info("VQA %s: %d of %d questions (%.1f%%) have no answer in %s and train on an all-zero target",
                 image_set, missing, total, 100 * share, vocab_file)
        if limit is not None and share > limit:
            raise VQADataError(f"VQA {image_set}: {missing} of {total} questions ({100 * share:.1f}%) have no human "
                               f"answer in the answer vocabulary {vocab_file}, above DATASET.MAX_NO_TARGET_FRACTION "
                               f"{limit}: is it the vocabulary of this data?")

    # ---- files ------------------------------------------------------------------------------------------------
    def _read_split(self, name: str) -> list[VQASample]:
        folder, size_file, _ = IMAGE_SETS[name]
        q_path = os.path.join(self.data_path, "vqa", f"v2_OpenEnded_mscoco_{name}_questions.json")
        questions = read_questions(q_path)
        annotations = None
        if not name.startswith("test"):
            a_path = os.path.join(self.data_path, "vqa", f"v2_mscoco_{name}_annotations.json")
            annotations = read_annotations(a_path)
            self._check_pairing(questions, annotations, q_path, a_path)
        size_path = os.path.join(self.data_path, size_file)
        if folder not in self.image_sizes:
            self.image_sizes[folder] = read_image_sizes(size_path)
        sizes = self.image_sizes[folder]
        samples = []
        for qid, image_id, text in questions:
            if image_id not in sizes:
                raise VQADataError(f"{q_path}: question {qid} refers to image {image_id}, which is not in {size_path}")
            answers = None if annotations is None else annotations[qid][1]
            samples.append(VQASample(qid, image_id, name, text, answers))
        return samples

    @staticmethod
    def _check_pairing(questions, annotations, q_path: str, a_path: str) -> None:
        """Questions and annotations are matched by question_id; both files must list the same ids and images."""
        seen = set()
        for qid, image_id, _ in questions:
            if qid in seen:
                raise VQADataError(f"{q_path}: question {qid} is listed twice")
            seen.add(qid)
            if qid not in annotations:
                raise VQADataError(f"{a_path}: no annotation for question {qid} of {q_path}")
            if annotations[qid][0] != image_id:
                raise VQADataError(f"{a_path}: question {qid} is on image {annotations[qid][0]} but {q_path} "
                                   f"says image {image_id}")
        extra = sorted(set(annotations) - seen)
        if extra:
            raise VQADataError(f"{a_path}: annotations for {len(extra)} question(s) not in {q_path}, e.g. {extra[0]}")

    def image_path(self, sample: VQASample) -> str:
        folder = IMAGE_SETS[sample.image_set][0]
        name = f"COCO_{folder}_{sample.image_id:012d}.jpg"
        if self.zip_mode:
            return os.path.join(self.data_path, f"{folder}.zip") + f"@/{folder}/{name}"
        return os.path.join(self.data_path, folder, name)

    def box_file_path(self, sample: VQASample) -> str:
        prefix = IMAGE_SETS[sample.image_set][2]
        root = os.path.join(self.data_path, "vgbua_res101_precomputed")
        if self.boxes == "36":
            names = [f"{prefix}_resnet101_faster_rcnn_genome_36"]
            if prefix == "trainval2014":
                names.insert(0, "trainval_resnet101_faster_rcnn_genome_36")
        else:
            names = [f"{prefix}_resnet101_faster_rcnn_genome"]
        paths = [os.path.join(root, n, f"{sample.image_id}.json") for n in names]
        if self.zip_mode:
            paths = [os.path.join(root, f"{n}.zip") + f"@/{n}/{sample.image_id}.json" for n in names]
        return next((p for p in paths if path_exists(p)), paths[-1])

    # ---- items ------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def question_id(self, index: int) -> int:
        return self.samples[index].question_id

    def describe(self, index: int) -> str:
        """The item in words, for messages: question id, image id and split, the box file (and image) it reads."""
        sample = self.samples[index]
        files = f"box file {self.box_file_path(sample)}"
        if not self.precomputed:
            files += f", image {self.image_path(sample)}"
        return f"question {sample.question_id} (image {sample.image_id} of {sample.image_set}; {files})"

    def regions(self, sample: VQASample) -> tuple[np.ndarray, np.ndarray | None]:
        """Boxes [N, 4] in original pixels (box 0 = whole image if asked) and features [N, 2048] or None.

        Boxes are checked against the COCO image size (`check_boxes`). A box file with no boxes serves only the
        whole-image box: end to end (the ResNet reads the pixels) or with its `image_box_feature`; in precomputed
        mode without one, or without ADD_IMAGE_AS_A_BOX, it is an error naming the file.
        """
        path = self.box_file_path(sample)
        if not path_exists(path):
            raise VQADataError(f"question {sample.question_id}: box file {path} of image {sample.image_id} not found")
        record = read_box_file(path, fields=("features", "image_box_feature") if self.precomputed else ())
        features = record.get("features")
        if self.precomputed and features is None:
            raise VQADataError(f"{path}: no 'features' (needed by NETWORK.IMAGE_FEAT_PRECOMPUTED, question "
                               f"{sample.question_id})")
        width, height = self.image_sizes[IMAGE_SETS[sample.image_set][0]][sample.image_id]
        try:
            boxes = check_boxes(record["boxes"], width, height, path)
        except BoxError as err:
            raise VQADataError(f"{err} (question {sample.question_id})") from err
        if len(boxes) == 0:
            if not self.add_image_as_a_box:
                raise VQADataError(f"{path}: no boxes and DATASET.ADD_IMAGE_AS_A_BOX false: question "
                                   f"{sample.question_id} would see no region at all")
            warn_once(path, "no boxes", f"{path}: no boxes; image {sample.image_id} is seen as the whole-image box")
        if self.add_image_as_a_box:
            boxes = prepend_whole_image_box(boxes, width, height)
            if features is not None:
                try:
                    whole = whole_image_feature(record, path)
                except BoxFileError as err:
                    raise VQADataError(f"{err} (question {sample.question_id}; the precomputed whole-image box "
                                       f"needs it)") from err
                features = np.concatenate([whole[None], features], 0)
        return boxes, features

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        boxes, features = self.regions(sample)
        width, height = self.image_sizes[IMAGE_SETS[sample.image_set][0]][sample.image_id]
        image = None
        if not self.precomputed:
            path = self.image_path(sample)
            try:
                image = open_image_or_blank(path, (width, height), self.skip_unreadable_images)
            except (OSError, FileNotFoundError) as err:
                raise VQADataError(f"question {sample.question_id}: cannot read image {path} ({err})") from err
        out = self.transform(image, boxes, image_size=(width, height))
        text = swap_left_right(sample.question) if out["flipped"] else sample.question
        ids = self.tokenizer.convert_tokens_to_ids(self.tokenizer.tokenize(text))
        ids = truncate_to_budget(ids, text_budget(self.max_positions, QUESTION_SPECIALS, len(boxes)),
                                 f"question {sample.question_id}")
        item = {"boxes": out["boxes"], "im_info": out["im_info"], "question": torch.tensor(ids, dtype=torch.long),
                "question_id": sample.question_id, "index": index}
        if image is not None:
            item["image"] = out["image"]
        if features is not None:
            item["box_features"] = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        if sample.answers is not None:
            item["answer_scores"] = soft_scores(sample.answers, self.answer_to_index, len(self.answer_vocab))
        return item
