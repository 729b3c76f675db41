"""VCR's two-model evaluation: the Q->A and the QA->R model's logits over a split (through the shared `predict`,
cached as .npy), combined into the Q->AR accuracy (`vcr/val.py`) or the leaderboard CSV (`vcr/test.py`).

Caches: `{result_name}_{a,r}_pred.npy` ([rows, 4]) under --result-path, with the annot_id of each row in
`..._pred_ids.txt` and what made them in `..._pred_meta.json` (vcr/logit_cache.py: `--use-cache` reuses a cache
only when that record matches); the test split uses `{result_name}_test_{a,r}_pred.*`.
"""
from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

import numpy as np
import torch

from common.config import load_config
from common.config_node import ConfigNode
from common.data.loader import SPLIT_SECTIONS
from common.engine import dist
from common.engine.dist import DistEnv
from common.engine.entry import config_overrides
from common.engine.evaluate import (
    add_inference_arguments,
    evaluation_session,
    inference_device,
    predict_split,
)
from vcr.details import write_vcr_details
from vcr.logit_cache import cache_source, read_cache, write_cache
from vcr.predictions import (
    merge_result_csvs,
    prediction_logits,
    read_vcr_labels,
    vcr_accuracies,
    write_logits_csv,
)
from vcr.task import TASK

log = logging.getLogger(__name__)
MODEL_TASKS = {"a": "Q2A", "r": "QA2R"}


def parse_args(argv: Sequence[str] | None = None, test: bool = False) -> argparse.Namespace:
    """The original val/test arguments, plus `--cfg` (both models' config, as the launch scripts pass it), the
    launch flags and trailing KEY VALUE overrides."""
    parser = argparse.ArgumentParser(description="VCR " + ("leaderboard file" if test else "validation (Q->AR)"))
    parser.add_argument("--cfg", default=None, help="config of both models when --a-cfg / --r-cfg are not given "
                                                    "(DATASET.TASK is set per model)")
    parser.add_argument("--a-cfg", default=None, help="config of the Q->A model")
    parser.add_argument("--r-cfg", default=None, help="config of the QA->R model")
    parser.add_argument("--a-ckpt", required=True, help="checkpoint of the Q->A model")
    parser.add_argument("--r-ckpt", required=True, help="checkpoint of the QA->R model")
    parser.add_argument("--a-bs", type=int, default=None, help="batch size of the Q->A model (default: config)")
    parser.add_argument("--r-bs", type=int, default=None, help="batch size of the QA->R model (default: config)")
    parser.add_argument("--result-path", default="./test_result" if test else "./vcr_val_results")
    parser.add_argument("--result-name", default="vl-bert")
    parser.add_argument("--use-cache", action="store_true", help="reuse cached logits (.npy) when present")
    parser.add_argument("--fp16", action="store_true", help="autocast inference (CUDA only)")
    if test:
        parser.add_argument("--test-file", default=None, help="test jsonl (default: the config's TEST_ANNOTATION_FILE)")
    else:
        parser.add_argument("--annot", default=None, help="val jsonl with labels (default: the config's VAL file)")
    add_inference_arguments(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs that override both configs")
    args = parser.parse_args(argv)
    for which in MODEL_TASKS:
        setattr(args, f"{which}_cfg", getattr(args, f"{which}_cfg") or args.cfg)
        if getattr(args, f"{which}_cfg") is None:
            parser.error(f"--{which}-cfg (or --cfg) is required")
    return args


def model_config(args: argparse.Namespace, which: str, split: str, annot_file: str | None) -> ConfigNode:
    """Model `which`'s YAML with the overrides, DATASET.TASK set to its task and, if given, the split's jsonl
    replaced by `annot_file`."""
    overrides = config_overrides(args.opts) + ["DATASET.TASK", MODEL_TASKS[which]]
    cfg = load_config(getattr(args, f"{which}_cfg"), overrides, add_task_defaults=TASK.add_defaults).clone()
    if annot_file:
        cfg.DATASET[f"{SPLIT_SECTIONS[split]}_ANNOTATION_FILE"] = os.path.abspath(annot_file)
    return cfg.freeze()


def model_logits(args: argparse.Namespace, which: str, split: str, annot_file: str | None,
                 env: DistEnv) -> tuple[np.ndarray, list[str]] | None:
    """Logits [rows, 4] of model `which` ("a" or "r") over `split` and each row's annot_id, from the cache or by
    running it on every rank; on rank 0 (None elsewhere)."""
    stem = args.result_name if split == "val" else f"{args.result_name}_{split}"
    prefix = os.path.join(args.result_path, f"{stem}_{which}_pred")
    cfg = model_config(args, which, split, annot_file)
    device = inference_device(env, args.gpus)
    batch_size = getattr(args, f"{which}_bs")
    ckpt = getattr(args, f"{which}_ckpt")
    autocast = args.fp16 and device.type == "cuda"
    source = cache_source(cfg, getattr(args, f"{which}_cfg"), ckpt, split, batch_size, autocast)
    cached = read_cache(prefix, source) if args.use_cache and env.is_main else None
    if dist.broadcast_object(cached is not None):  # rank 0 decides, so that every rank runs the model or none
        return cached if env.is_main else None
    predictions = predict_split(TASK, cfg, ckpt, split, env, device, batch_size=batch_size,
                                autocast_dtype=torch.float16 if autocast else None)
    if predictions is None:
        return None
    logits, annot_ids = prediction_logits(predictions)
    write_cache(prefix, logits, annot_ids, source)
    return logits, annot_ids


def val_main(argv: Sequence[str] | None = None) -> dict[str, float] | None:
    """`vcr/val.py`: Q->A, QA->R and Q->AR accuracy over the val jsonl, on rank 0 (None elsewhere)."""
    args = parse_args(argv)
    with evaluation_session(args) as env:
        a_out = model_logits(args, "a", "val", args.annot, env)
        r_out = model_logits(args, "r", "val", args.annot, env)
    if a_out is None or r_out is None:
        return None
    cfg = model_config(args, "a", "val", args.annot)
    annot = os.path.join(cfg.DATASET.DATASET_PATH, cfg.DATASET.VAL_ANNOTATION_FILE)
    label_ids, answer_labels, rationale_labels = read_vcr_labels(annot)
    for name, (_, ids) in (("Q->A", a_out), ("QA->R", r_out)):
        if list(ids) != label_ids:
            raise ValueError(f"{name} predictions cover annot_ids that differ from {annot} "
                             f"({len(ids)} vs {len(label_ids)} rows); rerun without --use-cache")
    write_vcr_details(os.path.join(args.result_path, f"{args.result_name}_val_details.jsonl"), annot,
                      os.path.join(cfg.DATASET.DATASET_PATH, cfg.DATASET.VAL_IMAGE_SET), "val", a_out[0], r_out[0],
                      label_ids)
    return vcr_accuracies(a_out[0], r_out[0], answer_labels, rationale_labels)


def test_main(argv: Sequence[str] | None = None) -> str | None:
    """`vcr/test.py`: the Q2A, QA2R and merged Q2AR leaderboard CSVs; the merged file's path on rank 0."""
    args = parse_args(argv, test=True)
    with evaluation_session(args) as env:
        a_out = model_logits(args, "a", "test", args.test_file, env)
        r_out = model_logits(args, "r", "test", args.test_file, env)
    if a_out is None or r_out is None:
        return None
    (a_logits, a_ids), (r_logits, r_ids) = a_out, r_out
    grouped = len(r_ids) % 4 == 0 and all(len(set(r_ids[k:k + 4])) == 1 for k in range(0, len(r_ids), 4))
    if not grouped or len(set(r_ids)) != len(r_ids) // 4:
        raise ValueError("QA->R test predictions must hold 4 consecutive rows (one per conditioning answer) per "
                         "question; rerun without --use-cache")
    if set(a_ids) != set(r_ids):
        raise ValueError("the Q->A and QA->R predictions cover different questions; rerun without --use-cache")
    stem = os.path.join(args.result_path, f"{args.result_name}_test_result")
    q2a = write_logits_csv(stem, "Q2A", a_ids, a_logits)
    qa2r = write_logits_csv(stem, "QA2R", r_ids, r_logits)
    merged = merge_result_csvs(q2a, qa2r, f"{stem}_Q2AR.csv")
    cfg = model_config(args, "a", "test", args.test_file)
    rationale_by_id = dict(zip(r_ids[::4], np.asarray(r_logits).reshape(-1, 4, 4), strict=True))
    write_vcr_details(f"{stem}_Q2AR_details.jsonl", os.path.join(cfg.DATASET.DATASET_PATH,
                                                                 cfg.DATASET.TEST_ANNOTATION_FILE),
                      os.path.join(cfg.DATASET.DATASET_PATH, cfg.DATASET.TEST_IMAGE_SET), "test", a_logits,
                      np.stack([rationale_by_id[i] for i in a_ids]), list(a_ids))
    return merged
