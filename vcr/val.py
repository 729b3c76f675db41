"""Local VCR evaluation: run the Q->A and the QA->R model over val and report Q->A, QA->R and Q->AR accuracy.

Logits are cached as `{result_name}_a_pred.npy` / `{result_name}_r_pred.npy` ([N, 4]) under --result-path, with
the annot_id of each row in `..._pred_ids.txt` (vcr/test.py uses `{result_name}_test_{a,r}_pred.*`).
"""
import argparse
import logging
import os

import numpy as np

from vcr.predictions import read_vcr_labels, vcr_accuracies
from vcr.task import predict_vcr_logits

log = logging.getLogger("vcr.val")


def parse_args(argv=None, test: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="VCR " + ("leaderboard file" if test else "validation (Q->AR)"))
    parser.add_argument("--a-cfg", required=True, help="config of the Q->A model")
    parser.add_argument("--r-cfg", required=True, help="config of the QA->R model")
    parser.add_argument("--a-ckpt", required=True, help="checkpoint of the Q->A model")
    parser.add_argument("--r-ckpt", required=True, help="checkpoint of the QA->R model")
    parser.add_argument("--a-bs", type=int, default=None, help="batch size of the Q->A model (default: config)")
    parser.add_argument("--r-bs", type=int, default=None, help="batch size of the QA->R model (default: config)")
    parser.add_argument("--gpus", type=int, nargs="+", default=None, help="GPU ids; the first is used (CPU if none)")
    parser.add_argument("--result-path", default="./test_result" if test else "./vcr_val_results")
    parser.add_argument("--result-name", default="vl-bert")
    parser.add_argument("--use-cache", action="store_true", help="reuse cached logits (.npy) when present")
    parser.add_argument("--cudnn-off", action="store_true")
    parser.add_argument("--fp16", action="store_true", help="autocast inference (CUDA only)")
    if test:
        parser.add_argument("--test-file", default=None, help="test jsonl (default: the config's TEST_ANNOTATION_FILE)")
    else:
        parser.add_argument("--annot", default=None, help="val jsonl with labels (default: the config's VAL file)")
    return parser.parse_args(argv)


def cached_logits(args, which: str, split: str, annot_file: str | None) -> tuple[np.ndarray, list[str]]:
    """Logits of model `which` ("a" or "r") and the annot_ids of its rows, from the cache or by running it."""
    stem = args.result_name if split == "val" else f"{args.result_name}_{split}"
    prefix = os.path.join(args.result_path, f"{stem}_{which}_pred")
    if args.use_cache and os.path.isfile(prefix + ".npy") and os.path.isfile(prefix + "_ids.txt"):
        log.info("using cached %s.npy", prefix)
        with open(prefix + "_ids.txt") as f:
            return np.load(prefix + ".npy"), f.read().split()
    task = "Q2A" if which == "a" else "QA2R"
    logits, annot_ids = predict_vcr_logits(
        cfg_path=getattr(args, f"{which}_cfg"), ckpt_path=getattr(args, f"{which}_ckpt"), task=task, split=split,
        batch_size=getattr(args, f"{which}_bs"), gpus=args.gpus, annot_file=annot_file, fp16=args.fp16,
        cudnn_off=args.cudnn_off)
    os.makedirs(args.result_path, exist_ok=True)
    np.save(prefix + ".npy", logits)
    with open(prefix + "_ids.txt", "w") as f:
        f.write("\n".join(annot_ids) + "\n")
    return logits, annot_ids


def main(argv=None) -> dict[str, float]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    args = parse_args(argv)
    a_logits, a_ids = cached_logits(args, "a", "val", args.annot)
    r_logits, r_ids = cached_logits(args, "r", "val", args.annot)
    annot = args.annot or _config_annotation(args.a_cfg)
    label_ids, answer_labels, rationale_labels = read_vcr_labels(annot)
    for name, ids in (("Q->A", a_ids), ("QA->R", r_ids)):
        if list(ids) != label_ids:
            raise ValueError(f"{name} predictions cover annot_ids that differ from {annot} "
                             f"({len(ids)} vs {len(label_ids)} rows); rerun without --use-cache")
    scores = vcr_accuracies(a_logits, r_logits, answer_labels, rationale_labels)
    for name, value in scores.items():
        print(f"{name}: {value * 100:.2f}%")
    return scores


def _config_annotation(cfg_path: str) -> str:
    from common.config import load_config
    from vcr.config import add_vcr_defaults

    cfg = load_config(cfg_path, add_task_defaults=add_vcr_defaults)
    return os.path.join(cfg.DATASET.DATASET_PATH, cfg.DATASET.VAL_ANNOTATION_FILE)


if __name__ == "__main__":
    main()
