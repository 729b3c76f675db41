"""Experiment configs: shared defaults + task defaults + YAML + `KEY VALUE` overrides, checked and frozen.

Keys and meanings are the original VL-BERT's (docs/CONFIG.md lists them all): shared keys in
`common/config_defaults.py`, each task's own in `<task>/config.py`, the original's keys that have no effect in
`common/config_no_effect.py` (accepted, with one warning per load that sets any).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from common.atomic_write import write_text_atomic
from common.config_defaults import common_defaults
from common.config_no_effect import (
    NO_EFFECT_KEYS,
    accept_no_effect_keys,
    add_every_task_keys,
    check_set,
    no_effect_keys,
    no_effect_keys_set,
    warning_text,
    without_defaults,
)
from common.config_node import (
    AddDefaults,
    ConfigError,
    ConfigNode,
    ConfigValue,
    dotted_keys,
    merge_mapping,
    merge_value,
    unknown_key_error,
)
from common.config_parsers import SPLITS, parsers_for
from common.yaml_io import YAMLContentError, load_yaml_file, load_yaml_text

__all__ = [
    "NO_EFFECT_KEYS",
    "AddDefaults",
    "ConfigError",
    "ConfigNode",
    "ConfigValue",
    "accept_no_effect_keys",
    "allow_dataset_list",
    "cfg_name",
    "check_consistency",
    "dataset_sections",
    "dump_config",
    "get_default_config",
    "load_config",
    "merge_overrides",
    "merge_yaml",
    "no_effect_keys",
]

log = logging.getLogger(__name__)

LR_SCHEDULES = ("step", "triangle", "plateau")
OPTIMIZERS = ("SGD", "Adam", "AdamW")
WARMUP_METHODS = ("linear", "constant")


def get_default_config(add_task_defaults: AddDefaults | None = None) -> ConfigNode:
    """Shared defaults, the task's, and the no-effect keys the task accepts; mutable (no YAML)."""
    cfg = common_defaults()
    if add_task_defaults is not None:
        add_task_defaults(cfg)
    add_every_task_keys(cfg)
    if cfg.__dict__.get("_dataset_list", False):
        cfg._dataset_template = cfg.DATASET.clone()
    return cfg


def allow_dataset_list(cfg: ConfigNode) -> None:
    """Let the YAML give DATASET as a list of sections (pretraining's multi-dataset configs).

    Each entry is filled from the complete DATASET defaults (shared, task and no-effect keys). Call it from
    `add_<task>_defaults`.
    """
    cfg._dataset_list = True


def dataset_sections(cfg: ConfigNode) -> list[ConfigNode]:
    """DATASET as a list of sections (one entry unless the YAML gave a list)."""
    return list(cfg.DATASET) if isinstance(cfg.DATASET, (list, tuple)) else [cfg.DATASET]


# ----- merging ----------------------------------------------------------------------------------------------
def merge_yaml(cfg: ConfigNode, yaml_path: str | os.PathLike[str]) -> list[str]:
    """Merge a YAML file onto cfg in place; errors name the file. Returns the no-effect keys it set."""
    source = str(yaml_path)
    try:
        data = load_yaml_file(yaml_path)
    except FileNotFoundError:
        raise ConfigError(f"{source}: config file not found") from None
    except YAMLContentError as err:  # the message names the file already
        raise ConfigError(str(err)) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of config keys at the top level, found {type(data).__name__}")
    merge_mapping(cfg, data, source, "", parsers_for(cfg))
    return no_effect_keys_set(cfg, data, source)


def merge_overrides(cfg: ConfigNode, overrides: Sequence[str] | str, source: str = "command line") -> list[str]:
    """Merge `KEY VALUE` pairs (["TRAIN.LR", "0.1", ...]); values are read as YAML, then type-checked.

    A numeric path part indexes a list, e.g. "DATASET.1.SEQ_LEN 32" for a list DATASET. A single string
    is split on whitespace ("TRAIN.LR 0.1 TRAIN.END_EPOCH 2"). Returns the no-effect keys it set.
    """
    if isinstance(overrides, str):
        overrides = overrides.split()
    if len(overrides) % 2:
        raise ConfigError(f"{source}: overrides must be KEY VALUE pairs, got an odd count: {list(overrides)}")
    parsers = parsers_for(cfg)
    ignored = []
    for key, text in zip(overrides[0::2], overrides[1::2], strict=True):
        parent, last, schema_key = _locate(cfg, key, source)
        value = _read_value(text, f"{source} value of {key}")
        parent[last] = merge_value(parent[last], value, source, key, schema_key, parsers)
        if check_set(cfg, schema_key, key, value, source):
            ignored.append(key)
    return ignored


def _read_value(text: Any, source: str) -> Any:
    """A command-line value read as YAML (text that is not YAML stays a string; a refused document is an error)."""
    if not isinstance(text, str):
        return text
    if text == "":
        return ""
    try:
        return load_yaml_text(text, source)
    except YAMLContentError as err:
        raise ConfigError(str(err)) from None
    except yaml.YAMLError:
        return text


def _locate(cfg: ConfigNode, key: str, source: str) -> tuple[ConfigNode | list[Any], str | int, str]:
    """(container, last key or index, schema key) for a dotted override key."""
    parts = key.split(".")
    node: Any = cfg
    schema: list[str] = []
    for depth, part in enumerate(parts):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            container, index = node, int(part)
        elif isinstance(node, ConfigNode) and part in node:
            container, index = node, part
            schema.append(part)
        elif isinstance(node, list) and part.isdigit():
            raise ConfigError(f"{source}: index {part} out of range in key {key} (the list has {len(node)} entries)")
        elif isinstance(node, list):
            raise ConfigError(f"{source}: {'.'.join(parts[:depth])} is a list; index it, e.g. "
                              f"{'.'.join(parts[:depth])}.0.{'.'.join(parts[depth:])} (in key {key})")
        else:
            prefix = "".join(f"{p}." for p in parts[:depth])
            siblings = [prefix + k for k in node] if isinstance(node, Mapping) else []
            raise unknown_key_error(source, key, siblings or dotted_keys(cfg))
        if depth == len(parts) - 1:
            return container, index, ".".join(schema)
        node = container[index]
    raise ConfigError(f"{source}: empty key")


# ----- checks -----------------------------------------------------------------------------------------------
def check_consistency(cfg: ConfigNode) -> None:
    """Rules that involve more than one key, or a value set; raises ConfigError."""
    train = cfg.TRAIN
    steps = list(train.LR_STEP)
    rules = [
        (train.GRAD_ACCUMULATE_STEPS >= 1,
         f"TRAIN.GRAD_ACCUMULATE_STEPS must be >= 1, got {train.GRAD_ACCUMULATE_STEPS}"),
        (steps == sorted(steps), f"TRAIN.LR_STEP must be increasing, got {steps}"),
        (not (train.FP16 and train.BF16), "TRAIN.FP16 and TRAIN.BF16 cannot both be true"),
        (train.LR_SCHEDULE in LR_SCHEDULES,
         f"TRAIN.LR_SCHEDULE must be one of {LR_SCHEDULES}, got {train.LR_SCHEDULE!r}"),
        (train.OPTIMIZER in OPTIMIZERS, f"TRAIN.OPTIMIZER must be one of {OPTIMIZERS}, got {train.OPTIMIZER!r}"),
        (train.WARMUP_METHOD in WARMUP_METHODS,
         f"TRAIN.WARMUP_METHOD must be one of {WARMUP_METHODS}, got {train.WARMUP_METHOD!r}"),
        (train.END_EPOCH >= train.BEGIN_EPOCH,
         f"TRAIN.END_EPOCH ({train.END_EPOCH}) must be >= TRAIN.BEGIN_EPOCH ({train.BEGIN_EPOCH})"),
        (train.GLOBAL_BATCH >= 0, f"TRAIN.GLOBAL_BATCH must be >= 0 (0 = off), got {train.GLOBAL_BATCH}"),
        (train.MAX_NONFINITE_STEPS >= 0, f"TRAIN.MAX_NONFINITE_STEPS must be >= 0, got {train.MAX_NONFINITE_STEPS}"),
        (cfg.CHECKPOINT_KEEP >= 0, f"CHECKPOINT_KEEP must be >= 0 (0 = keep all), got {cfg.CHECKPOINT_KEEP}"),
        (len(cfg.SCALES) in (0, 2), f"SCALES must be (short_side, max_long_side), got {cfg.SCALES}"),
    ]
    rules += [
        (isinstance(rule, str) and "->" in rule,
         f"NETWORK.PARTIAL_PRETRAIN_PREFIX_CHANGES: rule {rule!r} is not 'old->new'")
        for rule in cfg.NETWORK.PARTIAL_PRETRAIN_PREFIX_CHANGES
    ]
    rules += _batch_rules(cfg)
    for condition, message in rules:
        _require(condition, message)


def _batch_rules(cfg: ConfigNode) -> list[tuple[bool, str]]:
    """BATCH_IMAGES >= 1; a list exactly when DATASET is a list, one per-GPU batch per dataset."""
    n_datasets = len(cfg.DATASET) if isinstance(cfg.DATASET, list) else None
    rules = []
    for split in SPLITS:
        batch = cfg[split].BATCH_IMAGES
        sizes = batch if isinstance(batch, list) else [batch]
        rules.append((all(size >= 1 for size in sizes), f"{split}.BATCH_IMAGES must be >= 1, got {batch}"))
        n_batches = len(batch) if isinstance(batch, list) else None
        found = f"lists {n_datasets} datasets" if n_datasets else "is a single section"
        given = f"a list of {n_batches}" if n_batches else "a single int"
        rules.append((n_datasets == n_batches, f"{split}.BATCH_IMAGES is {given} but DATASET {found}"))
    return rules


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


# ----- entry points -----------------------------------------------------------------------------------------
def load_config(
    yaml_path: str | os.PathLike[str],
    overrides: Sequence[str] | str = (),
    add_task_defaults: AddDefaults | None = None,
) -> ConfigNode:
    """Shared defaults -> task defaults -> YAML -> `KEY VALUE` overrides -> checks -> frozen ConfigNode.

    Logs one warning listing the keys of `NO_EFFECT_KEYS` that the YAML or the overrides set.
    """
    cfg = get_default_config(add_task_defaults)
    ignored = merge_yaml(cfg, yaml_path)
    ignored += [f"{key} (command line)" for key in
                merge_overrides(cfg, overrides if isinstance(overrides, str) else list(overrides))]
    check_consistency(cfg)
    if ignored:
        log.warning(warning_text(str(yaml_path), ignored))
    return cfg.freeze()


def dump_config(cfg: ConfigNode, path: str | os.PathLike[str]) -> None:
    """Write cfg as YAML (plain types; loads back with load_config to an equal config), atomically.

    No-effect keys are written only where they differ from their default, so that loading the dump warns about
    exactly the ones the experiment set.
    """
    text = yaml.safe_dump(without_defaults(cfg, cfg.to_dict()), sort_keys=False, default_flow_style=False)
    write_text_atomic(path, text)


def cfg_name(yaml_path: str | os.PathLike[str]) -> str:
    """The config's file stem ("base_q2a_4x16G_fp32"), used for output folders."""
    return Path(yaml_path).stem
