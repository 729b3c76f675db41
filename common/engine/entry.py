"""Command-line entry of every `<task>/train_end2end.py`: the original arguments, then the engine.

    python <task>/train_end2end.py --cfg CFG [--model-dir DIR] [--log-dir DIR] [--dist] [--slurm] [--do-test]
                                   [--cudnn-off] [--partial-pretrain CKPT] [KEY VALUE ...]

Trailing `KEY VALUE` pairs override the config (`TRAIN.LR 1e-4`). `--dist` is optional under torchrun.
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
from collections.abc import Sequence
from typing import Any

import torch

from common.config import cfg_name, load_config
from common.engine import dist
from common.engine.log import setup_logging
from common.engine.trainer import fit, output_layout

log = logging.getLogger(__name__)


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cfg", required=True, help="experiment config YAML")
    parser.add_argument("--model-dir", default="", help="prefixed onto OUTPUT_PATH (checkpoints and logs go there)")
    parser.add_argument("--log-dir", default=None, help="TensorBoard folder (default: <output>/tensorboard_logs)")
    parser.add_argument("--dist", action="store_true", help="distributed training (set by the launch scripts)")
    parser.add_argument("--slurm", action="store_true", help="read rank and world size from SLURM variables")
    parser.add_argument("--do-test", action="store_true", help="run the task's test script after training")
    parser.add_argument("--cudnn-off", action="store_true", help="disable cuDNN")
    parser.add_argument("--partial-pretrain", default=None, help="overrides NETWORK.PARTIAL_PRETRAIN")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs that override the config")
    return parser


def load_run_config(task: Any, args: argparse.Namespace) -> Any:
    """The config of this run: YAML + overrides, with --model-dir and --partial-pretrain applied as the original."""
    overrides = list(args.opts)
    if overrides and overrides[0] == "--":
        overrides = overrides[1:]
    cfg = load_config(args.cfg, overrides, add_task_defaults=task.add_defaults)
    if not args.model_dir and args.partial_pretrain is None:
        return cfg
    cfg = cfg.clone()
    if args.model_dir:
        cfg.OUTPUT_PATH = os.path.join(args.model_dir, cfg.OUTPUT_PATH)
    if args.partial_pretrain is not None:
        cfg.NETWORK.PARTIAL_PRETRAIN = args.partial_pretrain
    return cfg.freeze()


def train_main(task: Any, argv: Sequence[str] | None = None) -> Any:
    """Parse arguments, set up the process group and logging, train; returns the final TrainState."""
    args = build_parser(f"Train VL-BERT on {task.name}").parse_args(argv)
    env = dist.setup(distributed=True if args.dist else None, slurm=args.slurm)
    try:
        cfg = load_run_config(task, args)
        name = cfg_name(args.cfg)
        out_dir, prefix = output_layout(cfg, name)
        setup_logging(out_dir, name, env.rank)
        log.info("config %s, output %s, world size %d, device %s", args.cfg, out_dir, env.world_size, env.device)
        if args.cudnn_off:
            torch.backends.cudnn.enabled = False
        state = fit(task, cfg, env, name, log_dir=args.log_dir)
        test = task.extra.get("test") if task.extra else None
        if args.do_test and env.is_main:
            if test is None:
                log.warning("--do-test: task %s has no test step", task.name)
            else:
                best = f"{prefix}-best.model"
                newest = sorted(glob.glob(f"{glob.escape(prefix)}-[0-9][0-9][0-9][0-9].model"))
                test(cfg, best if os.path.isfile(best) or not newest else newest[-1])
        return state
    finally:
        dist.teardown()
