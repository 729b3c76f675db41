"""The image-text retrieval plug-in for the shared engine: caption-image pairs of a Karpathy split per split, the
retrieval module, the `BatchR1` host metric (the dual encoder's in-batch R@1) beside `MatchAcc`, the data check and
the `--do-test` step (the two-stage evaluation of `retrieval/evaluate.py`)."""
from __future__ import annotations

import functools
import os

from common.config_node import ConfigNode
from common.data.loader import SPLIT_SECTIONS
from common.data.tokenizer import BertTokenizer
from common.data.transforms import build_transform
from common.engine.dist import DistEnv
from common.engine.task import Task
from common.metrics import Metric
from retrieval.check import check_retrieval_data
from retrieval.config import add_retrieval_defaults
from retrieval.dataset import KarpathySplit, RetrievalPairs
from retrieval.module import VLBertForRetrieval


@functools.lru_cache(maxsize=2)
def cached_tokenizer(bert_dir: str) -> BertTokenizer:
    return BertTokenizer.from_pretrained_dir(bert_dir)


def karpathy_split(cfg: ConfigNode, split: str) -> KarpathySplit:
    """The Karpathy image set DATASET.<SPLIT>_IMAGE_SET (precomputed box features only)."""
    if split not in SPLIT_SECTIONS:
        raise ValueError(f"retrieval split must be one of {sorted(SPLIT_SECTIONS)}, found {split!r}")
    if not cfg.NETWORK.IMAGE_FEAT_PRECOMPUTED:
        raise ValueError("retrieval reads precomputed box features: set NETWORK.IMAGE_FEAT_PRECOMPUTED true")
    data = cfg.DATASET
    return KarpathySplit(data.DATASET_PATH, data.ANNOTATION_FILE, data[f"{SPLIT_SECTIONS[split]}_IMAGE_SET"],
                         data.BOX_FOLDER, data.IMAGE_FOLDER, cached_tokenizer(cfg.NETWORK.BERT_MODEL_NAME),
                         int(data.SEQ_LEN))


def build_retrieval_dataset(cfg: ConfigNode, split: str) -> RetrievalPairs:
    """One item per caption of the split, with its image (training and in-loop validation; the validation captions
    in rounds, so that its unshuffled batches show different images)."""
    return RetrievalPairs(karpathy_split(cfg, split), build_transform(cfg, split), seed=int(cfg.RNG_SEED),
                          interleave=split != "train")


class PairMatchAccuracy(Metric):
    """Share of the scored pairs (positives and hard negatives) whose logit sign (> 0: matches) is the label."""

    def batch_stats(self, outputs: dict, batch: dict):
        labels = outputs.get("match_labels")
        if labels is None:
            return 0.0, 0.0
        return ((outputs["match_logits"] > 0).float() == labels).sum(), float(labels.numel())


class InBatchRecall(Metric):
    """Share of captions whose own image has the highest dual-encoder similarity in the batch (first stage)."""

    def batch_stats(self, outputs: dict, batch: dict):
        if "similarity" not in outputs:
            return 0.0, 0.0
        best = outputs["similarity"].argmax(1)
        image_index = batch["image_index"].to(best.device)
        return (image_index[best] == image_index).sum(), float(len(best))


def build_retrieval_metrics(cfg: ConfigNode) -> list[Metric]:
    """BatchR1 (host: the dual encoder's in-batch R@1, which decides what the second stage gets to see), MatchAcc;
    the engine adds TRAIN.LOSS_LOGGERS (ITCLoss, ITMLoss). MatchAcc is no host: with two hard negatives per positive
    a head that answers "no" to everything already scores 2/3, and it did for whole toy runs."""
    return [InBatchRecall("BatchR1"), PairMatchAccuracy("MatchAcc")]


def test_after_training(cfg: ConfigNode, ckpt_path: str, env: DistEnv) -> str | None:
    """`train_end2end.py --do-test`: the two-stage evaluation of DATASET.TEST_IMAGE_SET, written to
    `<checkpoint folder>/test_result/<MODEL_PREFIX>_retrieval_<image set>.json` (rank 0)."""
    from retrieval.evaluate import run_retrieval  # the evaluation builds on this module's TASK

    result_dir = os.path.join(os.path.dirname(os.path.abspath(ckpt_path)), "test_result")
    result = run_retrieval(cfg, ckpt_path, env, result_dir, cfg.MODEL_PREFIX or "retrieval")
    return None if result is None else result.path


TASK = Task(
    name="retrieval",
    add_defaults=add_retrieval_defaults,
    build_dataset=build_retrieval_dataset,
    modules={"VLBertForRetrieval": VLBertForRetrieval},
    build_metrics=build_retrieval_metrics,
    check_data=check_retrieval_data,
    test_after_training=test_after_training,
)
RETRIEVAL = TASK
