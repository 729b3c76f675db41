"""The RefCOCO+ plug-in for the shared engine: dataset per split, the ResNetVLBERT module, the metrics
(`RefAcc` hosts), the data check, the result-file writer and the `--do-test` step."""
from __future__ import annotations

import functools
import os

import torch

from common.config_node import ConfigNode
from common.data.tokenizer import BertTokenizer
from common.data.transforms import build_transform
from common.engine.dist import DistEnv
from common.engine.evaluate import evaluate_checkpoint, test_split_config
from common.engine.task import Task
from common.metrics import Metric
from refcoco.check import check_refcoco_data
from refcoco.config import add_refcoco_defaults
from refcoco.dataset import RefCOCODataset
from refcoco.module import ResNetVLBERTForRefCOCO
from refcoco.predictions import report_accuracy, write_refcoco_predictions
from refcoco.refer import Refer

SECTIONS = {"train": "TRAIN", "val": "VAL", "test": "TEST"}


@functools.lru_cache(maxsize=2)
def cached_refer(data_path: str) -> Refer:
    """One Refer per data folder per process (train and val share it)."""
    return Refer(data_path, "refcoco+", "unc")


def build_refcoco_dataset(cfg: ConfigNode, split: str) -> RefCOCODataset:
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


def build_refcoco_metrics(cfg: ConfigNode) -> list[Metric]:
    """RefAcc (host), ClsAcc, ClsPosAcc, ClsPosFrac (the engine adds the TRAIN.LOSS_LOGGERS losses)."""
    return [RefAccuracy("RefAcc"), BoxClassification("ClsAcc", "all"), BoxClassification("ClsPosAcc", "positive"),
            BoxClassification("ClsPosFrac", "positive_fraction")]


def test_after_training(cfg: ConfigNode, ckpt_path: str, env: DistEnv) -> str | None:
    """`--do-test`: score DATASET.TEST_IMAGE_SET with the kept checkpoint; the JSON (named after MODEL_PREFIX) goes
    next to it and the accuracy is logged (rank 0)."""
    result = evaluate_checkpoint(TASK, test_split_config(cfg), ckpt_path, env, os.path.dirname(ckpt_path),
                                 cfg.MODEL_PREFIX)
    if result is None:
        return None
    report_accuracy(result.predictions, result.path)
    return result.path


TASK = Task(
    name="refcoco",
    add_defaults=add_refcoco_defaults,
    build_dataset=build_refcoco_dataset,
    modules={"ResNetVLBERT": ResNetVLBERTForRefCOCO},
    build_metrics=build_refcoco_metrics,
    check_data=check_refcoco_data,
    write_predictions=write_refcoco_predictions,
    test_after_training=test_after_training,
)
