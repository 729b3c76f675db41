"""The image-text matching plug-in for the shared engine: dataset per split, the matching module, the
`MatchAcc` host metric, the data check and the result-file writer of `itm/test.py`."""
from __future__ import annotations

import functools

from common.config_node import ConfigNode
from common.data.tokenizer import BertTokenizer
from common.data.transforms import build_transform
from common.engine.task import Task
from common.metrics import Metric
from itm.check import check_itm_data
from itm.config import add_itm_defaults
from itm.dataset import ITMDataset
from itm.module import VLBertForImageTextMatching
from itm.predictions import write_itm_predictions

SECTIONS = {"train": "TRAIN", "val": "VAL", "test": "TEST"}


@functools.lru_cache(maxsize=2)
def cached_tokenizer(bert_dir: str) -> BertTokenizer:
    return BertTokenizer.from_pretrained_dir(bert_dir)


def build_itm_dataset(cfg: ConfigNode, split: str) -> ITMDataset:
    """ITMDataset of DATASET.<SPLIT>_IMAGE_SET under DATASET.DATASET_PATH (precomputed box features only)."""
    if split not in SECTIONS:
        raise ValueError(f"image-text matching split must be one of {sorted(SECTIONS)}, found {split!r}")
    if not cfg.NETWORK.IMAGE_FEAT_PRECOMPUTED:
        raise ValueError("image-text matching reads precomputed box features: set NETWORK.IMAGE_FEAT_PRECOMPUTED true")
    data = cfg.DATASET
    return ITMDataset(data.DATASET_PATH, data[f"{SECTIONS[split]}_IMAGE_SET"],
                      tokenizer=cached_tokenizer(cfg.NETWORK.BERT_MODEL_NAME), transform=build_transform(cfg, split),
                      train=split == "train", seq_len=int(data.SEQ_LEN), negative_prob=float(data.NEGATIVE_PROB),
                      zip_mode=bool(data.ZIP_MODE), seed=int(cfg.RNG_SEED),
                      max_positions=int(cfg.NETWORK.VLBERT.max_position_embeddings))


class MatchAccuracy(Metric):
    """Share of pairs whose logit sign (> 0 means "matches") agrees with the 0/1 label."""

    def batch_stats(self, outputs: dict, batch: dict):
        labels = batch.get("label")
        if labels is None:
            return 0.0, 0.0
        predicted = (outputs["match_logits"] > 0).float()
        return (predicted == labels.float()).sum(), float(labels.numel())


def build_itm_metrics(cfg: ConfigNode) -> list[Metric]:
    """MatchAcc (host); the engine adds TRAIN.LOSS_LOGGERS (ITMLoss)."""
    return [MatchAccuracy("MatchAcc")]


TASK = Task(
    name="itm",
    add_defaults=add_itm_defaults,
    build_dataset=build_itm_dataset,
    modules={"VLBertForImageTextMatching": VLBertForImageTextMatching},
    build_metrics=build_itm_metrics,
    check_data=check_itm_data,
    write_predictions=write_itm_predictions,
)
ITM = TASK
