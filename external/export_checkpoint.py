"""Export a training checkpoint (ours or the original's) as a portable folder: weights-only `model.safetensors`,
the resolved `config.yaml` and a `MODEL_CARD.md`; `load_exported(dir, task)` rebuilds the module from them.

Usage: python external/export_checkpoint.py --ckpt X.model --cfg Y.yaml --task vqa --out DIR [--metrics '{"acc": 0.7}']

Tied weights: safetensors stores no shared memory, so of tensors sharing storage (the MLM decoder and the word
embeddings) only the first in state-dict order is stored; the header metadata `tied` maps each dropped key to the
stored one. `load_exported` fills the dropped keys from it, and the rebuilt module ties them again by construction.
"""
import argparse
import datetime
import importlib
import json
import logging
import os
from collections.abc import Mapping, Sequence

from safetensors import safe_open
from safetensors.torch import save
from torch import Tensor, nn

from common.atomic_write import write_bytes_atomic, write_text_atomic
from common.config import dump_config, load_config, no_effect_keys
from common.engine.task import Task
from common.model.pretrained import checkpoint_state_dict
from common.model.state_dict_io import CheckpointError, load_state_dict_with_report, read_checkpoint_file
from external.original_keys import TASKS, from_original

log = logging.getLogger("export_checkpoint")

WEIGHTS_FILE, CONFIG_FILE, CARD_FILE = "model.safetensors", "config.yaml", "MODEL_CARD.md"


def load_task(task: str) -> Task:
    """The `TASK` plug-in of `<task>/task.py`."""
    if task not in TASKS:
        raise ValueError(f"--task {task!r} is not one of {list(TASKS)}")
    return importlib.import_module(f"{task}.task").TASK


def build_bare_module(task: Task, cfg) -> nn.Module:
    """The task module of cfg.MODULE without loading BERT or ResNet weights (they come from the checkpoint next)."""
    bare = cfg.clone()
    bare.NETWORK.IMAGE_PRETRAINED = ""
    bare.NETWORK.BERT_PRETRAINED = ""
    bare.NETWORK.VLBERT.from_scratch = True  # read by resolve_bert_path: no BERT weights
    quiet = logging.getLogger("common.model.fast_rcnn")  # its "ResNet keeps its random init" warning is moot here
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return task.build_module(bare.freeze())
    finally:
        quiet.setLevel(level)


def make_readable(path: str) -> None:
    """Files written through temporary files are private (0600); an export is meant to be shared."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def untie(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Keep one key per shared storage (the first in order); returns (contiguous tensors, {dropped: kept})."""
    kept: dict[tuple, str] = {}
    tensors, tied = {}, {}
    for key, value in state_dict.items():
        ident = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape), value.dtype)
        if value.numel() and ident in kept:
            tied[key] = kept[ident]
            continue
        kept[ident] = key
        tensors[key] = value.detach().contiguous().cpu()
    return tensors, tied


def parameter_count(module: nn.Module) -> int:
    """Unique parameters (tied ones counted once)."""
    return sum(p.numel() for p in module.parameters())


def write_model_card(path: str, task: str, cfg, module: nn.Module, source: str, metrics: Mapping | None) -> None:
    data = cfg.DATASET if isinstance(cfg.DATASET, Mapping) else cfg.DATASET[0]
    ignored = no_effect_keys(cfg)  # e.g. ROOT_PATH: set by the original YAMLs, read by nothing
    data_keys = [k for k in data if k.endswith(("_PATH", "_FILE", "_IMAGE_SET")) and data[k]
                 and f"DATASET.{k}" not in ignored]
    lines = [f"# {cfg.MODULE} ({task})", "",
             f"* Task: `{task}`; module: `{cfg.MODULE}` (`{type(module).__module__}.{type(module).__name__}`)",
             f"* Parameters: {parameter_count(module):,} (tied weights counted once)",
             f"* Source checkpoint: `{source}`",
             f"* Exported: {datetime.date.today().isoformat()}",
             "* Data: " + ", ".join(f"`DATASET.{k}: {data[k]}`" for k in data_keys)]
    if metrics:
        lines.append("* Metrics: " + ", ".join(f"{k} = {v}" for k, v in metrics.items()))
    lines += ["", "## Use", "", "```python", "from external.export_checkpoint import load_exported",
              f"module, cfg = load_exported(\"<this folder>\", \"{task}\")  # strict load; call module.eval() to test",
              "```", "", f"Fine-tuning from it: `NETWORK.PARTIAL_PRETRAIN: <this folder>/{WEIGHTS_FILE}` (with the "
              "task's `PARTIAL_PRETRAIN_PREFIX_CHANGES`).", "",
              f"`{WEIGHTS_FILE}` holds weights only, keys without `module.`; tensors tied in the module (the MLM "
              "decoder and the word embeddings) are stored once, `load_exported` fills the other key.", ""]
    write_text_atomic(path, "\n".join(lines))


def export_checkpoint(ckpt: str, cfg_path: str, task: str, out_dir: str, metrics: Mapping | None = None,
                      overrides: Sequence[str] = ()) -> str:
    """Load `ckpt` strictly into the module of `cfg_path`, write the export folder; returns the weights path."""
    plugin = load_task(task)
    cfg = load_config(cfg_path, overrides, add_task_defaults=plugin.add_defaults)
    state = from_original(checkpoint_state_dict(read_checkpoint_file(ckpt), ckpt), task)
    module = build_bare_module(plugin, cfg)
    load_state_dict_with_report(module, state, source=ckpt, allow_missing=False, allow_unexpected=False)
    tensors, tied = untie(module.state_dict())
    os.makedirs(out_dir, exist_ok=True)
    weights = os.path.join(out_dir, WEIGHTS_FILE)
    write_bytes_atomic(weights, save(tensors, metadata={"format": "pt", "task": task, "module": str(cfg.MODULE),
                                                        "tied": json.dumps(tied)}))
    dump_config(cfg, os.path.join(out_dir, CONFIG_FILE))
    write_model_card(os.path.join(out_dir, CARD_FILE), task, cfg, module, ckpt, metrics)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        make_readable(os.path.join(out_dir, name))
    log.info("exported %s (%d tensors, %d tied) to %s", ckpt, len(tensors), len(tied), out_dir)
    return weights


def read_tied(weights: str) -> dict[str, str]:
    """The `tied` map of an exported file's header ({} for a file written elsewhere)."""
    with safe_open(weights, framework="pt") as handle:
        metadata = handle.metadata() or {}
    try:
        return json.loads(metadata.get("tied", "{}"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{weights}: header metadata 'tied' is not JSON ({err})") from err


def load_exported(export_dir: str, task: str) -> tuple[nn.Module, object]:
    """Rebuild the module from `config.yaml` and load `model.safetensors` strictly; returns (module, cfg).

    The module is in training mode, as after construction; call `.eval()` for testing.
    """
    weights, cfg_path = os.path.join(export_dir, WEIGHTS_FILE), os.path.join(export_dir, CONFIG_FILE)
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{cfg_path}: missing (is {export_dir} a folder written by export_checkpoint.py?)")
    plugin = load_task(task)
    cfg = load_config(cfg_path, add_task_defaults=plugin.add_defaults)
    state = read_checkpoint_file(weights)
    for dropped, stored in read_tied(weights).items():
        if stored not in state:
            raise CheckpointError(f"{weights}: tied key {dropped} refers to {stored}, which the file lacks")
        state[dropped] = state[stored]
    module = build_bare_module(plugin, cfg)
    load_state_dict_with_report(module, state, source=weights, allow_missing=False, allow_unexpected=False)
    return module, cfg


def parse_metrics(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        metrics = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--metrics: not a JSON object ({err}): {text!r}") from err
    if not isinstance(metrics, dict):
        raise ValueError(f"--metrics: expected a JSON object such as '{{\"acc\": 0.7}}', found {text!r}")
    return metrics


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="training checkpoint (.model), ours or the original's")
    parser.add_argument("--cfg", required=True, help="the config it was trained with")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--out", required=True, help="export folder")
    parser.add_argument("--metrics", default=None, help="JSON object for the model card, e.g. '{\"acc\": 0.7}'")
    parser.add_argument("opts", nargs="*", help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return export_checkpoint(args.ckpt, args.cfg, args.task, args.out, parse_metrics(args.metrics), args.opts)
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        log.error("%s", err)
        raise SystemExit(2) from err


if __name__ == "__main__":
    main()
