"""The VCR plug-in for the shared engine: dataset, module, metric, checkpoint key map, fine-tuning initialisation,
data check, the single-model test CSV writer and the `--do-test` step.

Checkpoint keys, in one place: the original VCR module wrapped VL-BERT in TimeDistributed, so its checkpoints (and
the PARTIAL_PRETRAIN prefix rules of the original YAMLs, `vlbert->vlbert._module`) use `vlbert._module.*`.
Here the choices are folded into the batch, so the module's keys are `vlbert.*`. `map_vcr_checkpoint_keys` is the
task's `checkpoint_key_map`: it strips `module.`, turns `vlbert._module.` into `vlbert.` and drops the original
FastRCNN's duplicated `head.0.*` tensors. The engine applies it after the PARTIAL_PRETRAIN prefix rules and before
the one load, and to every fine-tuned checkpoint that val/test load.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from common.config_node import ConfigNode
from common.data.loader import SPLIT_SECTIONS
from common.data.tokenizer import BertTokenizer
from common.data.transforms import build_transform
from common.engine.dist import DistEnv
from common.engine.evaluate import evaluate_checkpoint, test_split_config
from common.engine.task import Task
from common.metrics import Accuracy, Metric
from common.model.fast_rcnn import map_original_fast_rcnn_keys
from vcr.check import check_vcr_data
from vcr.config import add_vcr_defaults
from vcr.dataset import VCRDataset
from vcr.module import ResNetVLBERTForVCR
from vcr.predictions import write_vcr_predictions

log = logging.getLogger(__name__)

REL_HEAD_SUFFIX = "relationsip_head.caption_image_relationship."  # the original key's spelling


def build_vcr_dataset(cfg: ConfigNode, split: str) -> VCRDataset:
    """VCRDataset for split "train" / "val" / "test" from cfg.DATASET (task = DATASET.TASK)."""
    section = SPLIT_SECTIONS[split]
    data = cfg.DATASET
    tokenizer = BertTokenizer.from_pretrained_dir(cfg.NETWORK.BERT_MODEL_NAME)
    return VCRDataset(
        ann_file=os.path.join(data.DATASET_PATH, data[f"{section}_ANNOTATION_FILE"]),
        image_root=os.path.join(data.DATASET_PATH, data[f"{section}_IMAGE_SET"]),
        task=data.TASK, tokenize=tokenizer.tokenize, to_ids=tokenizer.convert_tokens_to_ids,
        transform=build_transform(cfg, split), test_mode=split == "test", seq_len=int(data.SEQ_LEN),
        mask_size=int(data.MASK_SIZE), add_image_as_a_box=bool(data.ADD_IMAGE_AS_A_BOX),
        only_use_relevant_dets=bool(data.ONLY_USE_RELEVANT_DETS),
        skip_unreadable_images=bool(data.SKIP_UNREADABLE_IMAGES),
        max_positions=int(cfg.NETWORK.VLBERT.max_position_embeddings))


def build_vcr_metrics(cfg: ConfigNode) -> list[Metric]:
    """Host metric `Acc`: argmax over the 4 choices."""
    return [Accuracy("Acc", logits_key="label_logits", label_key="label")]


def map_vcr_checkpoint_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Original VCR / TimeDistributed keys -> this module's keys (see the module docstring)."""
    mapped: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = key[len("module."):] if key.startswith("module.") else key
        if new.startswith("vlbert._module."):
            new = "vlbert." + new[len("vlbert._module."):]
        mapped[new] = value
    return map_original_fast_rcnn_keys(mapped)


def after_load_pretrain(module: nn.Module, cfg: ConfigNode, pretrained_state: Mapping[str, Tensor]) -> None:
    """After PARTIAL_PRETRAIN (loaded by the engine through `map_vcr_checkpoint_keys`): PARTIAL_PRETRAIN_SEGMB_INIT
    (token-type row 0 -> row 1) and LOAD_REL_HEAD (1fc from W[1] - W[0] of the relationship head)."""
    net = cfg.NETWORK
    module = getattr(module, "module", module)
    if net.PARTIAL_PRETRAIN_SEGMB_INIT:
        with torch.no_grad():
            table = module.vlbert.token_type_embeddings.weight
            table[1] = table[0]
        log.info("PARTIAL_PRETRAIN_SEGMB_INIT: copied token-type embedding row 0 into row 1")
    if net.LOAD_REL_HEAD and net.CLASSIFIER_TYPE == "1fc":
        weight = _find_suffix(pretrained_state, REL_HEAD_SUFFIX + "weight")
        bias = _find_suffix(pretrained_state, REL_HEAD_SUFFIX + "bias")
        if weight is None or bias is None:
            log.info("LOAD_REL_HEAD: the checkpoint has no relationship head; final_mlp keeps its initialisation")
            return
        final = module.final_mlp[-1]
        with torch.no_grad():
            final.weight.copy_((weight[1] - weight[0]).view_as(final.weight))
            final.bias.copy_((bias[1] - bias[0]).view_as(final.bias))
        log.info("LOAD_REL_HEAD: final_mlp initialised from the relationship head (W[1] - W[0])")


def _find_suffix(state_dict: Mapping[str, Tensor], suffix: str) -> Tensor | None:
    for key, value in state_dict.items():
        if key.endswith(suffix):
            return value
    return None


def test_after_training(cfg: ConfigNode, ckpt_path: str, env: DistEnv) -> str | None:
    """`--do-test`: this model's test CSV (`<checkpoint>_test_result_Q2A.csv` or `_QA2R.csv`) beside the checkpoint
    (rank 0); `vcr/test.py` merges a Q2A and a QA2R model into the leaderboard file."""
    stem = os.path.splitext(ckpt_path)[0]
    result = evaluate_checkpoint(TASK, test_split_config(cfg), ckpt_path, env, os.path.dirname(stem),
                                 os.path.basename(stem))
    return None if result is None else result.path


TASK = Task(
    name="vcr",
    add_defaults=add_vcr_defaults,
    build_dataset=build_vcr_dataset,
    modules={"ResNetVLBERT": ResNetVLBERTForVCR},
    build_metrics=build_vcr_metrics,
    checkpoint_key_map=map_vcr_checkpoint_keys,
    after_load_pretrain=after_load_pretrain,
    check_data=check_vcr_data,
    write_predictions=write_vcr_predictions,
    test_after_training=test_after_training,
)
