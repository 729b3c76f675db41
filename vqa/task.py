"""The VQA v2 plug-in for the shared engine: dataset per split, the ResNetVLBERT module, the `SoftAcc` host metric,
the EvalAI writer and the CLASSIFIER_PRETRAINED initialisation after NETWORK.PARTIAL_PRETRAIN."""
from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from types import SimpleNamespace

import torch
from torch import Tensor, nn

from common.data.tokenizer import BertTokenizer
from common.data.transforms import build_transform
from common.engine.task import Task
from common.metrics import Metric
from vqa.config import add_vqa_defaults
from vqa.dataset import VQADataset
from vqa.module import ResNetVLBERTForVQA
from vqa.predictions import result_file_name, write_vqa_predictions

log = logging.getLogger(__name__)

SECTIONS = {"train": "TRAIN", "val": "VAL", "test": "TEST"}


@functools.lru_cache(maxsize=2)
def cached_tokenizer(bert_dir: str) -> BertTokenizer:
    return BertTokenizer.from_pretrained_dir(bert_dir)


def build_vqa_dataset(cfg, split: str, image_set: str | None = None) -> VQADataset:
    """VQADataset of DATASET.<SPLIT>_IMAGE_SET (or `image_set`) with the split's transform."""
    if split not in SECTIONS:
        raise ValueError(f"VQA split must be one of {sorted(SECTIONS)}, found {split!r}")
    data = cfg.DATASET
    return VQADataset(
        image_set=image_set or data[f"{SECTIONS[split]}_IMAGE_SET"], data_path=data.DATASET_PATH,
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


def build_vqa_metrics(cfg) -> list[Metric]:
    """SoftAcc (host); the engine adds TRAIN.LOSS_LOGGERS (AnsLoss)."""
    return [SoftAccuracy("SoftAcc")]


def after_load_pretrain(module: nn.Module, cfg, checkpoint_state_dict: Mapping[str, Tensor]) -> None:
    """CLASSIFIER_PRETRAINED: answer rows from the (now loaded) VL-BERT word embeddings, as the original."""
    if cfg.NETWORK.CLASSIFIER_PRETRAINED:
        module.init_classifier_from_word_embeddings(cached_tokenizer(cfg.NETWORK.BERT_MODEL_NAME))


def run_vqa_test(cfg, ckpt_path: str, split: str | None = None, result_path: str | None = None,
                 result_name: str | None = None, batch_size: int | None = None,
                 device: torch.device | str | None = None) -> str | None:
    """Write `<result_path>/<result_name>_vqa2_<split>.json` for `split` (default DATASET.TEST_IMAGE_SET).

    Every rank of a process group must call it (each runs a shard; outputs are gathered); rank 0 writes and
    returns the path, the others return None. Defaults: result_path = `<checkpoint folder>/test_result`,
    result_name = MODEL_PREFIX.
    """
    from common.data.loader import make_loader
    from common.engine import dist
    from common.engine.inference import load_module_for_inference, run_inference

    split = split or cfg.DATASET.TEST_IMAGE_SET
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"
    dataset = build_vqa_dataset(cfg, "test", image_set=split)
    env = SimpleNamespace(world_size=dist.world_size(), rank=dist.rank())
    loader = make_loader(dataset, cfg, "test", env, batch_size=batch_size)
    outputs = run_inference(load_module_for_inference(TASK, cfg, ckpt_path, device), loader, device)
    if dist.rank() != 0:
        return None
    result_path = result_path or os.path.join(os.path.dirname(os.path.abspath(ckpt_path)), "test_result")
    name = result_name or cfg.MODEL_PREFIX or "vqa"
    path = write_vqa_predictions(outputs, dataset, os.path.join(result_path, result_file_name(name, split)))
    log.info("VQA result file (%d questions of %s): %s", len(dataset), split, path)
    return path


def run_test_after_training(cfg, ckpt_path: str) -> str | None:
    """`train_end2end.py --do-test` (rank 0 only): the test split's result file next to the checkpoints."""
    from common.engine import dist

    if dist.world_size() > 1:
        log.warning("--do-test under a process group: run vqa/test.py --cfg ... --ckpt %s instead", ckpt_path)
        return None
    return run_vqa_test(cfg, ckpt_path)


TASK = Task(
    name="vqa",
    add_defaults=add_vqa_defaults,
    build_dataset=build_vqa_dataset,
    modules={"ResNetVLBERT": ResNetVLBERTForVQA},
    build_metrics=build_vqa_metrics,
    write_predictions=write_vqa_predictions,
    after_load_pretrain=after_load_pretrain,
    extra={"test": run_test_after_training},
)
VQA = TASK
