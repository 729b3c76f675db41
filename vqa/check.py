"""VQA's pre-flight data check (`Task.check_data`): questions, annotations, image lists, the answer vocabulary, and
a spread sample (or all) of the box files of every split the run reads, with the images in end-to-end mode only
(a precomputed-feature run never opens them). Box files are checked as `VQADataset.regions` reads them: every field
finite, the boxes against the COCO image size, features (and, for a file without boxes, `image_box_feature`) in
precomputed mode."""
from __future__ import annotations

import os
from types import SimpleNamespace

from common.config_node import ConfigNode
from common.data.preflight import Problems, spread
from vqa.dataset import IMAGE_SETS, UNK, VQADataset


def check_answer_vocab(cfg: ConfigNode, out: Problems) -> None:
    """DATASET.ANSWER_VOCAB_FILE exists, holds <unk> and has DATASET.ANSWER_VOCAB_SIZE answers."""
    ds = cfg.DATASET
    vocab = ds.ANSWER_VOCAB_FILE
    if out.need(vocab, "DATASET.ANSWER_VOCAB_FILE"):
        with open(vocab, encoding="utf-8") as f:
            answers = [line.strip().lower() for line in f if line.strip()]
        if UNK not in answers:
            out.append(f"{vocab}: no {UNK} line (config DATASET.ANSWER_VOCAB_FILE)")
        if len(answers) != ds.ANSWER_VOCAB_SIZE:
            out.append(f"{vocab}: {len(answers)} answers but DATASET.ANSWER_VOCAB_SIZE is {ds.ANSWER_VOCAB_SIZE}")


def check_image_set(cfg: ConfigNode, out: Problems, name: str, key: str, samples: int | None) -> None:
    """The question (and annotation) files of one image set, its image list, and `samples` images + box files."""
    ds, net = cfg.DATASET, cfg.NETWORK
    root = ds.DATASET_PATH
    where = f"DATASET.DATASET_PATH + {key}"
    questions = out.json_file(os.path.join(root, "vqa", f"v2_OpenEnded_mscoco_{name}_questions.json"), where,
                              ("questions",))
    if not name.startswith("test"):
        out.json_file(os.path.join(root, "vqa", f"v2_mscoco_{name}_annotations.json"), where, ("annotations",))
    image_list = out.json_file(os.path.join(root, IMAGE_SETS[name][1]), where, ("images",))
    sizes = {im.get("id"): (im.get("width"), im.get("height")) for im in (image_list or {}).get("images", [])
             if isinstance(im, dict)}
    paths = SimpleNamespace(data_path=root, zip_mode=bool(ds.ZIP_MODE), boxes=str(ds.BOXES))
    images = sorted({q.get("image_id") for q in (questions or {}).get("questions", []) if isinstance(q, dict)}
                    - {None})
    precomputed = bool(net.IMAGE_FEAT_PRECOMPUTED)
    whole_image = bool(ds.ADD_IMAGE_AS_A_BOX)  # then a file without boxes still serves the whole-image box
    rules = dict(allow_empty=whole_image, require_features=precomputed, whole_image_feature=precomputed and whole_image,
                 fields=("features", "image_box_feature") if precomputed else ())  # as VQADataset.regions reads
    for image_id in spread(images, samples):
        sample = SimpleNamespace(image_set=name, image_id=image_id)
        if not precomputed:
            out.image(VQADataset.image_path(paths, sample), where)
        size = sizes.get(image_id)
        size = size if size and all(isinstance(v, int) for v in size) else None
        out.box_file(VQADataset.box_file_path(paths, sample), "DATASET.DATASET_PATH + DATASET.BOXES",
                     image_size=size, **rules)


def check_vqa_data(cfg: ConfigNode, out: Problems, samples: int | None, splits: tuple[str, ...]) -> None:
    """Every file VQA training reads for the config sections in `splits`."""
    if not out.need(cfg.DATASET.DATASET_PATH, "DATASET.DATASET_PATH", "dataset folder"):
        return
    check_answer_vocab(cfg, out)
    for split in splits:
        key = f"DATASET.{split}_IMAGE_SET"
        for name in [n for n in str(cfg.DATASET[f"{split}_IMAGE_SET"]).split("+") if n]:
            if name not in IMAGE_SETS:
                out.append(f"unknown VQA image set {name!r} (config {key})")
            else:
                check_image_set(cfg, out, name, key, samples)
