"""The one evaluation path of every task: load a trained module, run it over a split on every rank, gather the
per-sample outputs on rank 0, and let the task's writer make its result file.

`test_main(task, command)` is the body of every `<task>/test.py`, as `train_main(task)` is of `train_end2end.py`;
`predict(module, loader, device)` is the model + loader -> per-sample outputs step underneath.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm import tqdm

from common.atomic_write import open_atomic  # noqa: F401 - the result writers' helper, importable from here too
from common.config import cfg_name, load_config
from common.config_node import ConfigNode
from common.data.loader import make_inference_loader
from common.engine import dist
from common.engine.dist import DistEnv
from common.engine.entry import add_launch_arguments, config_overrides
from common.engine.log import setup_logging
from common.engine.task import BatchLoader, Predictions, Task
from common.engine.trainer import move_to_device
from common.model.pretrained import checkpoint_state_dict, strip_module_prefix
from common.model.state_dict_io import load_state_dict_with_report, read_checkpoint_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TestCommand:
    """The command line of a task's test script; only these defaults differ between tasks."""

    __test__ = False  # not a pytest test class, though its name starts with "Test"
    description: str
    result_path: str = "./test_result"  # default --result-path
    name_from_model_prefix: bool = False  # default --result-name: MODEL_PREFIX, else the config file's name
    splits: tuple[str, ...] | None = None  # --split choices (None: any image set)
    default_split: str | None = None  # None: DATASET.TEST_IMAGE_SET


@dataclass(frozen=True)
class TestResult:
    """What a test run leaves on rank 0: the file the task's writer wrote, and the predictions behind it."""

    __test__ = False
    path: str
    predictions: Predictions


# ---- command line and process set-up ---------------------------------------------------------------------------
def test_parser(command: TestCommand) -> argparse.ArgumentParser:
    """`--cfg --ckpt [--split] [--bs] [--result-path] [--result-name]`, the launch flags, trailing KEY VALUE."""
    parser = argparse.ArgumentParser(description=command.description)
    parser.add_argument("--cfg", required=True, help="experiment config YAML")
    parser.add_argument("--ckpt", required=True, help="trained checkpoint (ours or the original's .model)")
    parser.add_argument("--split", default=command.default_split, choices=command.splits,
                        help="image set to score (default: %(default)s; none = DATASET.TEST_IMAGE_SET)")
    parser.add_argument("--bs", type=int, default=None, help="batch size per process (default: TEST.BATCH_IMAGES)")
    parser.add_argument("--result-path", default=command.result_path, help="folder of the result file")
    parser.add_argument("--result-name", default=None,
                        help="file-name prefix (default: " + ("MODEL_PREFIX)" if command.name_from_model_prefix
                                                              else "the config file's name)"))
    add_inference_arguments(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs that override the config")
    return parser


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """`--gpus`, `--model-dir` and the launch flags (`--dist --slurm --cudnn-off`) of every test/val script."""
    parser.add_argument("--gpus", type=int, nargs="+", default=None,
                        help="one process: GPU id to use (CPU when none, or without CUDA); under a launcher, unused")
    parser.add_argument("--model-dir", default="", help="accepted as the launch scripts pass it; unused at test")
    add_launch_arguments(parser)


@contextlib.contextmanager
def evaluation_session(args: argparse.Namespace) -> Iterator[DistEnv]:
    """The process group (under a launcher, or with --dist), console logging and --cudnn-off; torn down after."""
    env = dist.setup(distributed=True if args.dist else None, slurm=args.slurm)
    try:
        setup_logging(None, "", env.rank)
        if args.cudnn_off:
            torch.backends.cudnn.enabled = False
        yield env
    finally:
        dist.teardown()


def inference_device(env: DistEnv, gpus: Sequence[int] | None) -> torch.device:
    """Under a launcher, the rank's device; in one process, cuda:<first --gpus id>, else the default device."""
    if gpus and not torch.cuda.is_available():
        log.warning("--gpus %s given but CUDA is not available: running on CPU", list(gpus))
    if env.is_distributed or not torch.cuda.is_available() or not gpus:
        return env.device
    return torch.device("cuda", gpus[0])


def test_split_config(cfg: ConfigNode, image_set: str | None = None, batch_size: int | None = None) -> ConfigNode:
    """The config that scores `image_set` (default DATASET.TEST_IMAGE_SET) through the "test" split: no flipping
    (a result file describes the images as they are), TEST.BATCH_IMAGES = `batch_size` when given."""
    cfg = cfg.clone()
    if image_set:
        cfg.DATASET.TEST_IMAGE_SET = image_set
    cfg.TEST.FLIP_PROB = 0.0
    if batch_size:
        cfg.TEST.BATCH_IMAGES = batch_size
    return cfg.freeze()


# ---- weights and inference -------------------------------------------------------------------------------------
def load_trained_weights(task: Task, module: nn.Module, path: str) -> None:
    """A trained checkpoint of this project or of the original (`state_dict`, with or without `module.`) through
    the task's `checkpoint_key_map`; every module weight must be present (unused keys are only reported)."""
    state_dict = strip_module_prefix(checkpoint_state_dict(read_checkpoint_file(path), path))
    if task.checkpoint_key_map is not None:
        state_dict = task.checkpoint_key_map(state_dict)
    load_state_dict_with_report(module, state_dict, source=path, allow_missing=False)


def load_module_for_inference(task: Task, cfg: ConfigNode, ckpt_path: str,
                              device: torch.device | str = "cpu") -> nn.Module:
    """cfg.MODULE with the checkpoint's weights, on `device`, in eval mode (no start-up weights are read: the
    checkpoint must hold every weight)."""
    module = task.build_module(cfg, load_pretrained=False)
    load_trained_weights(task, module, ckpt_path)
    return module.to(device).eval()


def split_outputs(outputs: dict, batch_size: int) -> list[dict]:
    """Per-sample dicts from batched outputs (tensors whose first dim is the batch size; others are dropped)."""
    samples: list[dict] = [{} for _ in range(batch_size)]
    for key, value in outputs.items():
        if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == batch_size:
            for i, row in enumerate(value.detach().float().cpu()):
                samples[i][key] = row
    return samples


@torch.no_grad()
def predict(module: nn.Module, loader: BatchLoader, device: torch.device | str = "cpu",
            autocast_dtype: torch.dtype | None = None, show_progress: bool = True) -> list[dict] | None:
    """Outputs of every sample of `loader`, each once, in dataset index order, on rank 0; None on the other ranks
    (every rank of a process group must call it).

    A sample dict holds the module's per-sample outputs (CPU float tensors) plus "index".
    """
    device = torch.device(device)
    module.eval()
    collected: list[dict] = []
    for batch in tqdm(loader, desc="inference", disable=not (show_progress and dist.rank() == 0)):
        batch = move_to_device(batch, device)
        autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
        with autocast:
            outputs = module(batch)
        indices = torch.as_tensor(batch["index"]).view(-1).tolist()
        for index, sample in zip(indices, split_outputs(outputs, len(indices)), strict=True):
            sample["index"] = int(index)
            collected.append(sample)
    parts = dist.gather_object(collected)
    if parts is None:
        return None
    unique = {s["index"]: s for part in parts for s in part}
    return [unique[i] for i in sorted(unique)]


def predict_split(task: Task, cfg: ConfigNode, ckpt_path: str, split: str, env: DistEnv,
                  device: torch.device | None = None, batch_size: int | None = None,
                  autocast_dtype: torch.dtype | None = None) -> Predictions | None:
    """The checkpoint over `task.build_dataset(cfg, split)`, sharded over the ranks in batches that do not depend on
    the world size (`DealtBatches`); the Predictions on rank 0, None elsewhere."""
    device = device or env.device
    dataset = task.build_dataset(cfg, split)
    loader = make_inference_loader(dataset, cfg, split, env, batch_size)
    log.info("%s: predicting %d %s items in %d process(es), %d batch(es) on this one", task.name, len(dataset),
             split, env.world_size, len(loader))
    module = load_module_for_inference(task, cfg, ckpt_path, device)
    outputs = predict(module, loader, device, autocast_dtype, show_progress=env.is_main)
    if outputs is None:
        return None
    if [o["index"] for o in outputs] != list(range(len(dataset))):
        raise RuntimeError(f"{task.name}: inference covered {len(outputs)} of {len(dataset)} {split} items")
    return Predictions(outputs, dataset, cfg, split)


# ---- result files ----------------------------------------------------------------------------------------------
def evaluate_checkpoint(task: Task, cfg: ConfigNode, ckpt_path: str, env: DistEnv, result_dir: str,
                        result_name: str, device: torch.device | None = None) -> TestResult | None:
    """Predict the "test" split of `cfg` on every rank; rank 0 writes the task's result file and gets the result."""
    if task.write_predictions is None:
        raise ValueError(f"task {task.name} has no prediction writer (Task.write_predictions)")
    predictions = predict_split(task, cfg, ckpt_path, "test", env, device)
    if predictions is None:
        return None
    path = task.write_predictions(predictions, result_dir, result_name)
    log.info("%s: %d predictions of %s written to %s", task.name, len(predictions.outputs), predictions.image_set,
             path)
    return TestResult(path, predictions)


def test_main(task: Task, command: TestCommand, argv: Sequence[str] | None = None) -> TestResult | None:
    """Parse the test arguments, set up the process group and logging, score the split; the result on rank 0."""
    args = test_parser(command).parse_args(argv)
    with evaluation_session(args) as env:
        cfg = load_config(args.cfg, config_overrides(args.opts), add_task_defaults=task.add_defaults)
        name = args.result_name or (cfg.MODEL_PREFIX if command.name_from_model_prefix else cfg_name(args.cfg))
        cfg = test_split_config(cfg, args.split, args.bs)
        log.info("%s test: config %s, checkpoint %s, image set %s, world size %d", task.name, args.cfg, args.ckpt,
                 cfg.DATASET.TEST_IMAGE_SET, env.world_size)
        return evaluate_checkpoint(task, cfg, args.ckpt, env, args.result_path, name,
                                   inference_device(env, args.gpus))
