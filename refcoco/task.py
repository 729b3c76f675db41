"""The RefCOCO+ plug-in for the shared engine: dataset per split, the ResNetVLBERT module, the metrics
(`RefAcc` hosts) and the result-file writer."""
from __future__ import annotations

import functools
import os

import torch

from common.data.tokenizer import BertTokenizer
from common.data.transforms import build_transform
from common.engine.task import Task
from common.metrics import Metric
from refcoco.config import add_refcoco_defaults
from refcoco.dataset import RefCOCODataset
from refcoco.module import ResNetVLBERTForRefCOCO
from refcoco.predictions import write_refcoco_predictions
from refcoco.refer import Refer

SECTIONS = {"train": "TRAIN", "val": "VAL", "test": "TEST"}


@functools.lru_cache(maxsize=2)
def cached_refer(data_path: str) -> Refer:
    """One Refer per data folder per process (train and val share it)."""
    return Refer(data_path, "refcoco+", "unc")


def build_refcoco_dataset(cfg, split: str) -> RefCOCODataset:
    """RefCOCODataset of DATASET.<SPLIT>_IMAGE_SET with DATASET.<SPLIT>_BOXES candidates."""
    if split not in SECTIONS:
        raise ValueError(f"RefCOCO+ split must be one of {sorted(SECTIONS)}, found {split!r}")
    if cfg.NETWORK.IMAGE_FEAT_PRECOMPUTED:
        raise ValueError("NETWORK.IMAGE_FEAT_PRECOMPUTED=true is not supported for RefCOCO+ (as the original); "
                         "the boxes are pooled from the image")
    data, section = cfg.DATASET, SECTIONS[split]
    return RefCOCODataset(
        data_path=data.DATASET_PATH, image_set=data[f"{section}_IMAGE_SET"], boxes=data[f"{section}_BOXES"],
        transform=build_transform(cfg, split), tokenizer=BertTokenizer.from_pretrained_dir(cfg.NETWORK.BERT_MODEL_NAME),
        proposal_source=data.PROPOSAL_SOURCE, add_image_as_a_box=bool(data.ADD_IMAGE_AS_A_BOX),
        zip_mode=bool(data.ZIP_MODE), refer=cached_refer(data.DATASET_PATH),
        skip_unreadable_images=bool(data.SKIP_UNREADABLE_IMAGES),
        max_positions=int(cfg.NETWORK.VLBERT.max_position_embeddings))


class RefAccuracy(Metric):
    """Fraction of expressions whose top-scoring box has label 1 (IoU > 0.5 with the referred box)."""

    def batch_stats(self, outputs: dict, batch: dict):
        labels = batch["labels"]
        best = outputs["logits"].argmax(1)
        picked = labels.gather(1, best.unsqueeze(1)).squeeze(1)
        return (picked > 0.5).sum(), torch.tensor(len(labels))


class BoxClassification(Metric):
    """Per valid box, sigmoid(logit) > 0.5 against the label: `which` = "all" (ClsAcc), "positive" (ClsPosAcc,
    recall of label-1 boxes) or "positive_fraction" (ClsPosFrac, share of label-1 boxes)."""

    def __init__(self, name: str, which: str):
        self.which = which
        super().__init__(name)

    def batch_stats(self, outputs: dict, batch: dict):
        labels = batch["labels"]
        valid = labels > -0.5
        positive = labels > 0.5
        predicted = outputs["logits"] > 0
        if self.which == "all":
            return ((predicted == positive) & valid).sum(), valid.sum()
        if self.which == "positive":
            return (predicted & positive).sum(), positive.sum()
        return positive.sum(), valid.sum()


def build_refcoco_metrics(cfg) -> list[Metric]:
    """RefAcc (host), ClsAcc, ClsPosAcc, ClsPosFrac (the engine adds the TRAIN.LOSS_LOGGERS losses)."""
    return [RefAccuracy("RefAcc"), BoxClassification("ClsAcc", "all"), BoxClassification("ClsPosAcc", "positive"),
            BoxClassification("ClsPosFrac", "positive_fraction")]


def test_after_training(cfg, ckpt_path: str) -> None:
    """`--do-test`: score DATASET.TEST_IMAGE_SET with the best checkpoint; the JSON goes next to it."""
    from refcoco.test import evaluate_split  # local: refcoco.test imports this module

    evaluate_split(cfg, ckpt_path, cfg.DATASET.TEST_IMAGE_SET, result_path=os.path.dirname(ckpt_path))


TASK = Task(
    name="refcoco",
    add_defaults=add_refcoco_defaults,
    build_dataset=build_refcoco_dataset,
    modules={"ResNetVLBERT": ResNetVLBERTForRefCOCO},
    build_metrics=build_refcoco_metrics,
    write_predictions=write_refcoco_predictions,
    extra={"test": test_after_training},
)
