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

import torch

from common.config import cfg_name, load_config
from common.config_node import ConfigNode
from common.engine import dist
from common.engine.dist import DistEnv
from common.engine.log import setup_logging
from common.engine.run import output_layout
from common.engine.state import TrainState
from common.engine.task import Task
from common.engine.trainer import fit

log = logging.getLogger(__name__)


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags the launch scripts and the original command lines pass to every entry script."""
    parser.add_argument("--dist", action="store_true", help="distributed run (set by the launch scripts)")
    parser.add_argument("--slurm", action="store_true", help="read rank and world size from SLURM variables")
    parser.add_argument("--cudnn-off", action="store_true", help="disable cuDNN")


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cfg", required=True, help="experiment config YAML")
    parser.add_argument("--model-dir", default="", help="prefixed onto OUTPUT_PATH (checkpoints and logs go there)")
    parser.add_argument("--log-dir", default=None, help="TensorBoard folder (default: <output>/tensorboard_logs)")
    parser.add_argument("--do-test", action="store_true", help="run the task's test step after training")
    parser.add_argument("--partial-pretrain", default=None, help="overrides NETWORK.PARTIAL_PRETRAIN")
    add_launch_arguments(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs that override the config")
    return parser


def config_overrides(opts: Sequence[str]) -> list[str]:
    """The trailing KEY VALUE pairs, without the `--` that may separate them from the flags."""
    opts = list(opts)
    return opts[1:] if opts[:1] == ["--"] else opts


def load_run_config(task: Task, args: argparse.Namespace) -> ConfigNode:
    """The config of this run: YAML + overrides, with --model-dir and --partial-pretrain applied as the original."""
    cfg = load_config(args.cfg, config_overrides(args.opts), add_task_defaults=task.add_defaults)
    if not args.model_dir and args.partial_pretrain is None:
        return cfg
    cfg = cfg.clone()
    if args.model_dir:
        cfg.OUTPUT_PATH = os.path.join(args.model_dir, cfg.OUTPUT_PATH)
    if args.partial_pretrain is not None:
        cfg.NETWORK.PARTIAL_PRETRAIN = args.partial_pretrain
    return cfg.freeze()


def kept_checkpoint(prefix: str, suffix: str = ".model") -> str:
    """`{prefix}-best.model` when validation kept one, else the newest epoch file (decided on rank 0); with
    suffix ".dcp" (TRAIN.CHECKPOINT_FORMAT dcp) the folders, which every test script reads as well."""
    best = f"{prefix}-best{suffix}"
    newest = sorted(glob.glob(f"{glob.escape(prefix)}-[0-9][0-9][0-9][0-9]{suffix}"))
    return dist.broadcast_object(best if os.path.exists(best) or not newest else newest[-1])


def run_test_after_training(task: Task, cfg: ConfigNode, prefix: str, env: DistEnv) -> None:
    """`--do-test`: the task's test step on every rank with the kept checkpoint."""
    if task.test_after_training is None:
        log.warning("--do-test: task %s has no test step", task.name)
        return
    suffix = ".dcp" if cfg.TRAIN.CHECKPOINT_FORMAT == "dcp" else ".model"
    task.test_after_training(cfg, kept_checkpoint(prefix, suffix), env)


def train_main(task: Task, argv: Sequence[str] | None = None) -> TrainState:
    """Parse arguments, set up the process group and logging, train; returns the final TrainState."""
    args = build_parser(f"Train VL-BERT on {task.name}").parse_args(argv)
    cfg = load_run_config(task, args)  # before the process group: its timeouts are config keys
    env = dist.setup(distributed=True if args.dist else None, slurm=args.slurm,
                     timeout_s=int(cfg.TRAIN.DIST_TIMEOUT_S), io_timeout_s=int(cfg.TRAIN.CHECKPOINT_TIMEOUT_S))
    try:
        name = cfg_name(args.cfg)
        out_dir, prefix = output_layout(cfg, name)
        setup_logging(out_dir, name, env.rank)
        log.info("config %s, output %s, world size %d, device %s", args.cfg, out_dir, env.world_size, env.device)
        if args.cudnn_off:
            torch.backends.cudnn.enabled = False
        state = fit(task, cfg, env, name, log_dir=args.log_dir)
        if args.do_test:
            run_test_after_training(task, cfg, prefix, env)
        return state
    finally:
        dist.teardown()
