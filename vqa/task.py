"""The VQA v2 plug-in for the shared engine: dataset per split, the ResNetVLBERT module, the `SoftAcc` host metric,
the CLASSIFIER_PRETRAINED initialisation after NETWORK.PARTIAL_PRETRAIN, the data check, the EvalAI writer and the
`--do-test` step."""
from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping

from torch import Tensor, nn

from common.config_node import ConfigNode
from common.data.tokenizer import BertTokenizer
from common.data.transforms import build_transform
from common.engine.dist import DistEnv
from common.engine.evaluate import evaluate_checkpoint, test_split_config
from common.engine.task import Task
from common.metrics import Metric
from vqa.check import check_vqa_data
from vqa.config import add_vqa_defaults
from vqa.dataset import VQADataset
from vqa.module import ResNetVLBERTForVQA
from vqa.predictions import write_vqa_predictions

log = logging.getLogger(__name__)

SECTIONS = {"train": "TRAIN", "val": "VAL", "test": "TEST"}


@functools.lru_cache(maxsize=2)
def cached_tokenizer(bert_dir: str) -> BertTokenizer:
    return BertTokenizer.from_pretrained_dir(bert_dir)


def build_vqa_dataset(cfg: ConfigNode, split: str) -> VQADataset:
    """VQADataset of DATASET.<SPLIT>_IMAGE_SET with the split's transform."""
    if split not in SECTIONS:
        raise ValueError(f"VQA split must be one of {sorted(SECTIONS)}, found {split!r}")
    data = cfg.DATASET
    return VQADataset(
        image_set=data[f"{SECTIONS[split]}_IMAGE_SET"], data_path=data.DATASET_PATH,
        answer_vocab_file=data.ANSWER_VOCAB_FILE, transform=build_transform(cfg, split),
        tokenizer=cached_tokenizer(cfg.NETWORK.BERT_MODEL_NAME), precomputed=bool(cfg.NETWORK.IMAGE_FEAT_PRECOMPUTED),
        boxes=str(data.BOXES), add_image_as_a_box=bool(data.ADD_IMAGE_AS_A_BOX), zip_mode=bool(data.ZIP_MODE),
        vocab_size=int(data.ANSWER_VOCAB_SIZE), use_imdb=bool(data.USE_IMDB),
        skip_unreadable_images=bool(data.SKIP_UNREADABLE_IMAGES),
        max_positions=int(cfg.NETWORK.VLBERT.max_position_embeddings),
        max_no_target_fraction=float(data.MAX_NO_TARGET_FRACTION))


class SoftAccuracy(Metric):
    """Official soft score (from the targets) of the argmax answer, averaged over questions."""

    def batch_stats(self, outputs: dict, batch: dict):
        scores = batch.get("answer_scores")
        if scores is None:
            return 0.0, 0.0
        best = outputs["label_logits"].argmax(1, keepdim=True)
        return scores.float().gather(1, best).sum(), float(scores.shape[0])


def build_vqa_metrics(cfg: ConfigNode) -> list[Metric]:
    """SoftAcc (host); the engine adds TRAIN.LOSS_LOGGERS (AnsLoss)."""
    return [SoftAccuracy("SoftAcc")]


def after_load_pretrain(module: nn.Module, cfg: ConfigNode, checkpoint_state_dict: Mapping[str, Tensor]) -> None:
    """CLASSIFIER_PRETRAINED: answer rows from the (now loaded) VL-BERT word embeddings, as the original."""
    if cfg.NETWORK.CLASSIFIER_PRETRAINED:
        module.init_classifier_from_word_embeddings(cached_tokenizer(cfg.NETWORK.BERT_MODEL_NAME))


def test_after_training(cfg: ConfigNode, ckpt_path: str, env: DistEnv) -> str | None:
    """`train_end2end.py --do-test`: the EvalAI file of DATASET.TEST_IMAGE_SET in `<checkpoint folder>/test_result/`,
    named after MODEL_PREFIX (written by rank 0)."""
    result_dir = os.path.join(os.path.dirname(os.path.abspath(ckpt_path)), "test_result")
    result = evaluate_checkpoint(TASK, test_split_config(cfg), ckpt_path, env, result_dir, cfg.MODEL_PREFIX or "vqa")
    return None if result is None else result.path


TASK = Task(
    name="vqa",
    add_defaults=add_vqa_defaults,
    build_dataset=build_vqa_dataset,
    modules={"ResNetVLBERT": ResNetVLBERTForVQA},
    build_metrics=build_vqa_metrics,
    after_load_pretrain=after_load_pretrain,
    check_data=check_vqa_data,
    write_predictions=write_vqa_predictions,
    test_after_training=test_after_training,
)
VQA = TASK
