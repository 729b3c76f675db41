"""Score a RefCOCO+ checkpoint on one split and write `{result_name}_refcoco+_{split}.json` (one {"ref_id", "box"}
per expression, box = [x1, y1, x2, y2] in original pixels).

    python refcoco/test.py --cfg CFG --ckpt CKPT --split {val,testA,testB,test} [--gpus 0] [--bs 8]
                           [--result-path DIR] [--result-name NAME] [KEY VALUE ...]

The printed accuracy is the original evaluation's: a prediction is correct when its IoU with the referred box
(`getRefBox` as [x, y, x + w, y + h]) is >= 0.5, areas counted with the +1-pixel convention
((x2 - x1 + 1)(y2 - y1 + 1)), so the numbers compare with the original's and the paper's. The labels of all
RefCOCO+ splits are public, so testA/testB are scored here too. "test" is testA and testB together, as the
refer API's split rule gives.
"""
import argparse
import logging
import os
from types import SimpleNamespace

import torch

from common.config import load_config
from common.data.loader import make_loader
from common.engine.inference import load_module_for_inference, run_inference
from refcoco.predictions import (
    accuracy_against_refer,
    collect_pred_boxes,
    prediction_records,
    result_file_name,
    write_predictions_json,
)
from refcoco.task import TASK

log = logging.getLogger("refcoco.test")
SPLITS = ("val", "testA", "testB", "test")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="RefCOCO+ test: result JSON and accuracy of one split")
    parser.add_argument("--cfg", required=True, help="experiment config YAML")
    parser.add_argument("--ckpt", required=True, help="checkpoint to score")
    parser.add_argument("--split", default="val", choices=SPLITS)
    parser.add_argument("--gpus", type=int, nargs="+", default=None, help="GPU ids; the first is used (CPU if none)")
    parser.add_argument("--bs", type=int, default=None, help="batch size (default: TEST.BATCH_IMAGES)")
    parser.add_argument("--result-path", default="./refcoco_test_result", help="folder of the result JSON")
    parser.add_argument("--result-name", default=None, help="file-name prefix (default: MODEL_PREFIX)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs that override the config")
    return parser.parse_args(argv)


def pick_device(gpus) -> torch.device:
    if gpus and torch.cuda.is_available():
        return torch.device("cuda", gpus[0])
    if gpus:
        log.warning("--gpus %s given but CUDA is not available: running on CPU", gpus)
    return torch.device("cpu")


def evaluate_split(cfg, ckpt_path: str, split: str, result_path: str, result_name: str | None = None,
                   batch_size: int | None = None, device: torch.device | str = "cpu") -> tuple[str, float]:
    """Run the checkpoint over `split` (DATASET.TEST_BOXES candidates, no flip); returns (JSON path, accuracy)."""
    cfg = cfg.clone()
    cfg.DATASET.TEST_IMAGE_SET = split
    cfg.TEST.FLIP_PROB = 0.0
    if batch_size:
        cfg.TEST.BATCH_IMAGES = batch_size
    cfg.freeze()
    dataset = TASK.build_dataset(cfg, "test")
    loader = make_loader(dataset, cfg, "test", SimpleNamespace(world_size=1, rank=0))
    module = load_module_for_inference(TASK, cfg, ckpt_path, device)
    outputs = run_inference(module, loader, device)
    records = prediction_records([s.ref_id for s in dataset.samples], collect_pred_boxes(outputs, len(dataset)))
    name = result_name or cfg.MODEL_PREFIX
    path = write_predictions_json(records, os.path.join(result_path, result_file_name(name, split)))
    accuracy = accuracy_against_refer(records, dataset.refer)
    log.info("RefCOCO+ %s: accuracy %.4f over %d expressions (boxes %s); wrote %s", split, accuracy, len(records),
             cfg.DATASET.TEST_BOXES, path)
    return path, accuracy


def main(argv=None) -> tuple[str, float]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    args = parse_args(argv)
    overrides = args.opts[1:] if args.opts[:1] == ["--"] else args.opts
    cfg = load_config(args.cfg, overrides, add_task_defaults=TASK.add_defaults)
    path, accuracy = evaluate_split(cfg, args.ckpt, args.split, args.result_path, args.result_name, args.bs,
                                    pick_device(args.gpus))
    print(f"RefCOCO+ {args.split} accuracy: {accuracy * 100:.2f}% ({path})")
    return path, accuracy


if __name__ == "__main__":
    main()
