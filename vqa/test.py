"""VQA v2 EvalAI result file: the argmax answer of every question of a split, with the real question ids.

    python vqa/test.py --cfg CFG --ckpt CKPT [--gpus 0] [--bs 64] [--result-path DIR] [--result-name NAME]
                       [--split test2015] [KEY VALUE ...]

Writes `<result-path>/<result-name>_vqa2_<split>.json`, a JSON list of {"question_id": int, "answer": str}.
Under torchrun (`./scripts/dist_run_single.sh N vqa/test.py ...` style launch) each rank runs a shard and the
outputs are gathered, each question once; rank 0 writes the file.
"""
import argparse
import logging

import torch

from common.config import cfg_name, load_config
from common.engine import dist
from vqa.task import VQA, run_vqa_test

log = logging.getLogger("vqa.test")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="VQA v2 result file (EvalAI format)")
    parser.add_argument("--cfg", required=True, help="experiment config YAML")
    parser.add_argument("--ckpt", required=True, help="trained checkpoint (ours or the original's .model)")
    parser.add_argument("--gpus", type=int, nargs="+", default=None, help="GPU id to use (CPU when none / no CUDA)")
    parser.add_argument("--bs", type=int, default=None, help="batch size per process (default: TEST.BATCH_IMAGES)")
    parser.add_argument("--model-dir", default="", help="accepted for compatibility with the original; unused")
    parser.add_argument("--result-path", default="./test_result", help="folder of the result file")
    parser.add_argument("--result-name", default=None, help="file name prefix (default: the config's name)")
    parser.add_argument("--split", default=None, help="image set(s), e.g. test2015, test-dev2015, val2014 "
                                                      "(default: DATASET.TEST_IMAGE_SET)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs that override the config")
    return parser.parse_args(argv)


def pick_device(env, gpus) -> torch.device:
    if env.is_distributed or not torch.cuda.is_available():
        return env.device
    return torch.device("cuda", gpus[0]) if gpus else env.device


def main(argv=None) -> str | None:
    """Run the test split; returns the path written (None on ranks other than 0)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    env = dist.setup()
    try:
        opts = args.opts[1:] if args.opts[:1] == ["--"] else args.opts
        cfg = load_config(args.cfg, opts, add_task_defaults=VQA.add_defaults)
        path = run_vqa_test(cfg, args.ckpt, split=args.split, result_path=args.result_path,
                            result_name=args.result_name or cfg_name(args.cfg), batch_size=args.bs,
                            device=pick_device(env, args.gpus))
        if path is not None:
            print(f"result file: {path}")
        return path
    finally:
        dist.teardown()


if __name__ == "__main__":
    main()
