"""The VCR plug-in for the shared engine: dataset, module, metric, checkpoint key map and fine-tuning initialisation.

Checkpoint keys, in one place: the original VCR module wrapped VL-BERT in TimeDistributed, so its checkpoints (and
the PARTIAL_PRETRAIN prefix rules of the original YAMLs, `vlbert->vlbert._module`) use `vlbert._module.*`.
Here the choices are folded into the batch, so the module's keys are `vlbert.*`. `map_vcr_checkpoint_keys`
runs after the prefix rules and before loading: it strips `module.`, turns `vlbert._module.` into `vlbert.` and
drops the original FastRCNN's duplicated `head.0.*` tensors. It is applied by `after_load_pretrain` (to the
PARTIAL_PRETRAIN state dict the engine hands over, after its prefix rules) and by `load_vcr_checkpoint`
(fine-tuned checkpoints for val/test).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from common.config import load_config
from common.data.loader import SPLIT_SECTIONS, make_loader
from common.data.tokenizer import BertTokenizer
from common.data.transforms import build_transform
from common.engine.inference import run_inference
from common.engine.task import Task
from common.metrics import Accuracy
from common.model.fast_rcnn import map_original_fast_rcnn_keys
from common.model.pretrained import checkpoint_state_dict
from common.model.state_dict_io import load_state_dict_with_report, read_checkpoint_file
from vcr.config import add_vcr_defaults
from vcr.dataset import VCRDataset
from vcr.module import ResNetVLBERTForVCR
from vcr.predictions import write_q2a_csv, write_qa2r_csv

log = logging.getLogger(__name__)

REL_HEAD_SUFFIX = "relationsip_head.caption_image_relationship."  # the original key's spelling


def build_vcr_dataset(cfg, split: str) -> VCRDataset:
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


def build_vcr_metrics(cfg) -> list:
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


@torch.no_grad()
def load_mapped_keys(module: nn.Module, state_dict: Mapping[str, Tensor], source: str, strict: bool = False) -> int:
    """Load the tensors of `state_dict` whose mapped key (`map_vcr_checkpoint_keys`) the module has.

    With `strict`, every module key must be present (unused checkpoint keys are only reported). Returns the count
    loaded.
    """
    mapped = map_vcr_checkpoint_keys(state_dict)
    own = module.state_dict()
    if strict:
        load_state_dict_with_report(module, mapped, source, allow_missing=False)
        return len(mapped)
    fitting = {k: v.to(own[k].dtype) if v.is_floating_point() else v for k, v in mapped.items() if k in own}
    load_state_dict_with_report(module, fitting, f"{source} (VCR key map)")
    return len(fitting)


def load_vcr_checkpoint(module: nn.Module, path: str) -> None:
    """A fine-tuned VCR checkpoint (this project's keys or the original's) into `module`; every weight must come."""
    load_mapped_keys(module, checkpoint_state_dict(read_checkpoint_file(path), path), path, strict=True)


def after_load_pretrain(module: nn.Module, cfg, pretrained_state: Mapping[str, Tensor]) -> None:
    """After PARTIAL_PRETRAIN: load the keys the VCR prefix rules turned into `vlbert._module.*` (mapped back to
    `vlbert.*`), then PARTIAL_PRETRAIN_SEGMB_INIT (token-type row 0 -> row 1) and LOAD_REL_HEAD (1fc from
    W[1] - W[0] of the relationship head)."""
    net = cfg.NETWORK
    module = getattr(module, "module", module)
    if pretrained_state:
        load_mapped_keys(module, pretrained_state, net.PARTIAL_PRETRAIN or "PARTIAL_PRETRAIN")
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


def predict_with_config(cfg, ckpt_path: str, split: str, batch_size: int | None = None,
                        device: str | torch.device = "cpu", fp16: bool = False) -> tuple[np.ndarray, list[str]]:
    """Run a fine-tuned VCR model over `split`: logits [len(dataset), 4] in dataset order and each row's annot_id.

    In QA2R test mode there are 4 consecutive rows per question, conditioned on answers 0..3 in turn.
    """
    module = ResNetVLBERTForVCR.from_config(cfg, load_pretrained=False)
    load_vcr_checkpoint(module, ckpt_path)
    dataset = build_vcr_dataset(cfg, split)
    loader = make_loader(dataset, cfg, split, env=None, batch_size=batch_size)
    device = torch.device(device)
    autocast = torch.float16 if fp16 and device.type == "cuda" else None
    outputs = run_inference(module.to(device).eval(), loader, device, autocast_dtype=autocast)
    if [o["index"] for o in outputs] != list(range(len(dataset))):
        raise RuntimeError(f"inference covered {len(outputs)} of {len(dataset)} {split} items")
    logits = np.stack([o["label_logits"].numpy() for o in outputs]).astype(np.float32)
    return logits, [dataset.record_and_answer(i)[0].annot_id for i in range(len(dataset))]


def predict_vcr_logits(cfg_path: str, ckpt_path: str, task: str, split: str, batch_size: int | None = None,
                       gpus: list[int] | None = None, annot_file: str | None = None, fp16: bool = False,
                       cudnn_off: bool = False) -> tuple[np.ndarray, list[str]]:
    """`predict_with_config` from a YAML, with DATASET.TASK forced to `task` and, if given, the split's jsonl
    replaced by `annot_file`; runs on cuda:<gpus[0]> when a GPU is named and available, else on the CPU."""
    cfg = load_config(cfg_path, ["DATASET.TASK", task], add_task_defaults=add_vcr_defaults).clone()
    if annot_file:
        cfg.DATASET[f"{SPLIT_SECTIONS[split]}_ANNOTATION_FILE"] = os.path.abspath(annot_file)
    if cudnn_off:
        torch.backends.cudnn.enabled = False
    device = f"cuda:{gpus[0]}" if gpus and torch.cuda.is_available() else "cpu"
    return predict_with_config(cfg.freeze(), ckpt_path, split, batch_size, device, fp16)


def write_single_model_test_csv(cfg, ckpt_path: str) -> str:
    """`--do-test` after training: this model's test CSV (`..._test_result_Q2A.csv` or `_QA2R.csv`) beside the
    checkpoint; `vcr/test.py` merges a Q2A and a QA2R model into the leaderboard file."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    logits, annot_ids = predict_with_config(cfg, ckpt_path, "test", device=device)
    stem = os.path.splitext(ckpt_path)[0]
    if cfg.DATASET.TASK == "Q2A":
        return write_q2a_csv(f"{stem}_test_result_Q2A.csv", annot_ids, logits)
    return write_qa2r_csv(f"{stem}_test_result_QA2R.csv", annot_ids[::4], logits.reshape(-1, 4, 4))


TASK = Task(
    name="vcr",
    add_defaults=add_vcr_defaults,
    build_dataset=build_vcr_dataset,
    modules={"ResNetVLBERT": ResNetVLBERTForVCR},
    build_metrics=build_vcr_metrics,
    after_load_pretrain=after_load_pretrain,
    extra={"checkpoint_key_map": map_vcr_checkpoint_keys, "test": write_single_model_test_csv},
)
