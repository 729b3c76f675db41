"""COCO images and instance files, VQA v2 question/annotation files, the answer vocabulary and the
bottom-up precomputed box files, all in the official layouts under `<root>/coco/`."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from common.data.box_files import write_box_file
from data.shape_world.features import detect, feature_projection
from data.shape_world.files import link_or_copy, write_jpeg, write_json, write_text
from data.shape_world.vocab import coco_categories_json
from data.shape_world.vqa_questions import TEMPLATES, AnswerBalancer, Question, crowd_answers, select_questions
from data.shape_world.world import Scene, flat_polygons, object_area, render

# Box folders: "10-100ada" (the yamls) and "36" (the code default; both spellings of the trainval one).
PRECOMPUTED_FOLDERS = {
    "trainval": ("trainval2014_resnet101_faster_rcnn_genome", "trainval_resnet101_faster_rcnn_genome_36",
                 "trainval2014_resnet101_faster_rcnn_genome_36"),
    "test": ("test2015_resnet101_faster_rcnn_genome", "test2015_resnet101_faster_rcnn_genome_36"),
}
VQA_INFO = {"description": "Toy world in the VQA v2 layout", "url": "https://visualqa.org", "version": "2.0",
            "year": 2017, "contributor": "toy world", "date_created": "2017-04-26 17:00:00"}
VQA_LICENSE = {"name": "Creative Commons Attribution 4.0 International License",
               "url": "http://creativecommons.org/licenses/by/4.0/"}
COCO_LICENSES = [{"id": 1, "name": "Attribution License", "url": "http://creativecommons.org/licenses/by/2.0/"}]


@dataclass(frozen=True)
class CocoImage:
    image_id: int
    image_set: str  # train2014 | val2014 | test2015 | train2017 | val2017
    scene: Scene
    refcoco_split: str | None = None  # train | val | testA | testB for RefCOCO+ images

    @property
    def file_name(self) -> str:
        if self.image_set.endswith("2017"):
            return f"{self.image_id:012d}.jpg"
        return f"COCO_{self.image_set}_{self.image_id:012d}.jpg"

    def record(self) -> dict:
        return {"id": self.image_id, "width": self.scene.width, "height": self.scene.height,
                "file_name": self.file_name, "license": 1, "coco_url": "", "flickr_url": "",
                "date_captured": "2014-01-01 00:00:00"}

    def annotations(self) -> list[dict]:
        """Instance annotations; ids are image_id * 10 + object index (unique over the world)."""
        return [{"id": self.image_id * 10 + j, "image_id": self.image_id, "category_id": obj.category_id,
                 "bbox": obj.xywh, "area": object_area(self.scene, obj), "iscrowd": 0,
                 "segmentation": flat_polygons(obj)} for j, obj in enumerate(self.scene.objects)]


def instances_document(images: list[CocoImage], description: str, with_annotations: bool = True) -> dict:
    doc = {"info": {"description": description, "version": "1.0", "year": 2014, "contributor": "toy world",
                    "url": "", "date_created": "2015-01-27 09:11:52.357475"},
           "licenses": COCO_LICENSES, "images": [im.record() for im in images],
           "categories": coco_categories_json()}
    if with_annotations:
        doc["annotations"] = [ann for im in images for ann in im.annotations()]
    return doc


def write_coco_images(coco_root: str, images: list[CocoImage]) -> None:
    for im in images:
        write_jpeg(os.path.join(coco_root, im.image_set, im.file_name), render(im.scene))


def write_instance_files(coco_root: str, by_set: dict[str, list[CocoImage]]) -> None:
    ann = os.path.join(coco_root, "annotations")
    for image_set in ("train2014", "val2014"):
        write_json(os.path.join(ann, f"instances_{image_set}.json"),
                   instances_document(by_set[image_set], f"Toy world COCO {image_set}"))
    write_json(os.path.join(ann, "image_info_test2015.json"),
               instances_document(by_set["test2015"], "Toy world COCO test2015", with_annotations=False))


def _questions_document(subtype: str, questions: list[dict]) -> dict:
    return {"info": VQA_INFO, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": subtype,
            "license": VQA_LICENSE, "questions": questions}


def _ask(images: list[CocoImage], rng: np.random.Generator, per_image: int) -> list[tuple[CocoImage, int, Question]]:
    balancer = AnswerBalancer()
    out = []
    for im in images:
        for k, q in enumerate(select_questions(im.scene, rng, balancer, per_image)):
            out.append((im, im.image_id * 1000 + k, q))
    return out


def write_vqa(coco_root: str, by_set: dict[str, list[CocoImage]], seed: int, per_image: int) -> dict[str, list]:
    """Question and annotation files (same order), test-dev = questions on the first half of test2015,
    and answers_vqa.txt. Returns the annotation lists of train2014/val2014 (for the baselines)."""
    vqa = os.path.join(coco_root, "vqa")
    annotated: dict[str, list] = {}
    for stream, image_set in enumerate(("train2014", "val2014", "test2015")):
        rng = np.random.default_rng([seed, 3000 + stream])
        asked = _ask(by_set[image_set], rng, per_image)
        questions = [{"image_id": im.image_id, "question": q.question, "question_id": qid} for im, qid, q in asked]
        write_json(os.path.join(vqa, f"v2_OpenEnded_mscoco_{image_set}_questions.json"),
                   _questions_document(image_set, questions))
        if image_set == "test2015":
            dev_ids = {im.image_id for im in by_set[image_set][: (len(by_set[image_set]) + 1) // 2]}
            dev = [q for q in questions if q["image_id"] in dev_ids]
            write_json(os.path.join(vqa, "v2_OpenEnded_mscoco_test-dev2015_questions.json"),
                       _questions_document("test-dev2015", dev))
            continue
        anns = [{"question_id": qid, "image_id": im.image_id, "question_type": TEMPLATES[q.template][0],
                 "answer_type": TEMPLATES[q.template][1], "multiple_choice_answer": q.answer,
                 "answers": crowd_answers(q, rng)} for im, qid, q in asked]
        write_json(os.path.join(vqa, f"v2_mscoco_{image_set}_annotations.json"),
                   {"info": VQA_INFO, "license": VQA_LICENSE, "data_type": "mscoco", "data_subtype": image_set,
                    "annotations": anns})
        annotated[image_set] = [(q.question, q.template, ann) for (_, _, q), ann in zip(asked, anns, strict=True)]
    vocab = sorted({a for _, _, answers in TEMPLATES.values() for a in answers})
    write_text(os.path.join(vqa, "answers_vqa.txt"), ["<unk>"] + vocab)
    return annotated


def write_precomputed_boxes(coco_root: str, by_set: dict[str, list[CocoImage]], seed: int) -> None:
    """`{image_id}.json` per image in every box folder name the loaders use (extra names are hard links)."""
    projection = feature_projection(seed)
    rng = np.random.default_rng([seed, 4000])
    base = os.path.join(coco_root, "vgbua_res101_precomputed")
    for group, image_sets in (("trainval", ("train2014", "val2014")), ("test", ("test2015",))):
        first, *aliases = PRECOMPUTED_FOLDERS[group]
        for image_set in image_sets:
            for im in by_set[image_set]:
                det = detect(im.scene, rng, projection)
                path = os.path.join(base, first, f"{im.image_id}.json")
                write_box_file(path, det.boxes, features=det.features, classes=det.classes, attrs=det.attrs,
                               image_w=im.scene.width, image_h=im.scene.height, image_id=im.image_id)
                for alias in aliases:
                    link_or_copy(path, os.path.join(base, alias, f"{im.image_id}.json"))
