"""Experiment configs: shared defaults + task defaults + YAML + `KEY VALUE` overrides, checked and frozen.

Keys and meanings are the original VL-BERT's (docs/CONFIG.md lists them all).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from common.config_defaults import common_defaults
from common.config_node import (
    ConfigError,
    ConfigNode,
    Parser,
    dotted_keys,
    merge_mapping,
    merge_value,
    to_float,
    type_error,
    unknown_key_error,
)

__all__ = [
    "ConfigError",
    "ConfigNode",
    "allow_dataset_list",
    "cfg_name",
    "check_consistency",
    "dataset_sections",
    "dump_config",
    "get_default_config",
    "load_config",
    "merge_overrides",
    "merge_yaml",
]

LR_SCHEDULES = ("step", "triangle", "plateau")
OPTIMIZERS = ("SGD", "Adam", "AdamW")
WARMUP_METHODS = ("linear", "constant")
SPLITS = ("TRAIN", "VAL", "TEST")


def get_default_config(add_task_defaults: Callable[[ConfigNode], None] | None = None) -> ConfigNode:
    """Shared defaults plus the task's, mutable (no YAML)."""
    cfg = common_defaults()
    if add_task_defaults is not None:
        add_task_defaults(cfg)
    return cfg


def allow_dataset_list(cfg: ConfigNode) -> None:
    """Let the YAML give DATASET as a list of sections (pretraining's multi-dataset configs).

    Each entry is filled from the DATASET defaults as they stand when this is called. Call it from
    `add_<task>_defaults` after the task's DATASET keys are added.
    """
    cfg._dataset_template = cfg.DATASET.clone()


def dataset_sections(cfg: ConfigNode) -> list[ConfigNode]:
    """DATASET as a list of sections (one entry unless the YAML gave a list)."""
    return list(cfg.DATASET) if isinstance(cfg.DATASET, (list, tuple)) else [cfg.DATASET]


# ----- parsers for the original's quirks --------------------------------------------------------------------
def _parse_lr_step(value: Any, source: str, dotted: str) -> tuple[float, ...]:
    """"14,18" (the original's form) or a list of numbers -> (14.0, 18.0)."""
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",") if part.strip()]
        try:
            return tuple(float(part) for part in parts)
        except ValueError:
            raise type_error(source, dotted, 'comma-separated epochs like "14,18"', value) from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),)
    if isinstance(value, (list, tuple)):
        return tuple(to_float(item, source, dotted) for item in value)
    raise type_error(source, dotted, 'comma-separated epochs like "14,18"', value)


def _parse_loss_loggers(value: Any, source: str, dotted: str) -> list[tuple[str, str]]:
    """["name,Display", ...] (the original's form) or [[name, Display], ...] -> [(name, Display), ...]."""
    expected = 'a list of "output_name,DisplayName" strings'
    if not isinstance(value, (list, tuple)):
        raise type_error(source, dotted, expected, value)
    loggers = []
    for item in value:
        pair = [part.strip() for part in item.split(",")] if isinstance(item, str) else item
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(p, str) and p for p in pair):
            raise type_error(source, dotted, expected, item)
        loggers.append((pair[0], pair[1]))
    return loggers


def _parse_loss_scale(value: Any, source: str, dotted: str) -> float | str:
    if value == "dynamic":
        return value
    try:
        return to_float(value, source, dotted)
    except ConfigError:
        raise type_error(source, dotted, 'a number or "dynamic"', value) from None


def _parse_batch_images(value: Any, source: str, dotted: str) -> int | list[int]:
    """An int, or a list of ints (one per dataset when DATASET is a list)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items or any(isinstance(v, bool) or not isinstance(v, int) for v in items):
        raise type_error(source, dotted, "an int or a list of ints", value)
    return list(value) if isinstance(value, (list, tuple)) else value


def _dataset_parser(template: ConfigNode, parsers: Mapping[str, Parser], cfg: ConfigNode) -> Parser:
    """DATASET as a section (merged onto the current one) or a list of sections (each from the template)."""

    def parse(value: Any, source: str, dotted: str) -> Any:
        if isinstance(value, (list, tuple)):
            if not value:
                raise type_error(source, dotted, "a section or a non-empty list of sections", value)
            entries = []
            for i, entry in enumerate(value):
                node = template.clone()
                merge_mapping(node, entry, source, f"{dotted}[{i}].", parsers, "DATASET.")
                entries.append(node)
            return entries
        current = cfg.DATASET if isinstance(cfg.DATASET, ConfigNode) else template.clone()
        merge_mapping(current, value, source, dotted + ".", parsers, "DATASET.")
        return current

    return parse


def _parsers(cfg: ConfigNode) -> dict[str, Parser]:
    parsers: dict[str, Parser] = {
        "TRAIN.LR_STEP": _parse_lr_step,
        "TRAIN.LOSS_LOGGERS": _parse_loss_loggers,
        "TRAIN.FP16_LOSS_SCALE": _parse_loss_scale,
        **{f"{split}.BATCH_IMAGES": _parse_batch_images for split in SPLITS},
    }
    template = cfg.__dict__.get("_dataset_template")
    if template is not None:
        parsers["DATASET"] = _dataset_parser(template, parsers, cfg)
    return parsers


# ----- merging ----------------------------------------------------------------------------------------------
def merge_yaml(cfg: ConfigNode, yaml_path: str | os.PathLike) -> None:
    """Merge a YAML file onto cfg in place; errors name the file."""
    source = str(yaml_path)
    try:
        with open(yaml_path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{source}: config file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of config keys at the top level, found {type(data).__name__}")
    merge_mapping(cfg, data, source, "", _parsers(cfg))


def merge_overrides(cfg: ConfigNode, overrides: Sequence[str], source: str = "command line") -> None:
    """Merge `KEY VALUE` pairs (["TRAIN.LR", "0.1", ...]); values are read as YAML, then type-checked.

    A numeric path part indexes a list, e.g. "DATASET.1.SEQ_LEN 32" for a list DATASET. A single string
    is split on whitespace ("TRAIN.LR 0.1 TRAIN.END_EPOCH 2").
    """
    if isinstance(overrides, str):
        overrides = overrides.split()
    if len(overrides) % 2:
        raise ConfigError(f"{source}: overrides must be KEY VALUE pairs, got an odd count: {list(overrides)}")
    parsers = _parsers(cfg)
    for key, text in zip(overrides[0::2], overrides[1::2], strict=True):
        parent, last, schema_key = _locate(cfg, key, source)
        value = _read_value(text)
        parent[last] = merge_value(parent[last], value, source, key, schema_key, parsers)


def _read_value(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    if text == "":
        return ""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _locate(cfg: ConfigNode, key: str, source: str) -> tuple[Any, Any, str]:
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
    yaml_path: str | os.PathLike,
    overrides: Sequence[str] = (),
    add_task_defaults: Callable[[ConfigNode], None] | None = None,
) -> ConfigNode:
    """Shared defaults -> task defaults -> YAML -> `KEY VALUE` overrides -> checks -> frozen ConfigNode."""
    cfg = get_default_config(add_task_defaults)
    merge_yaml(cfg, yaml_path)
    merge_overrides(cfg, overrides if isinstance(overrides, str) else list(overrides))
    check_consistency(cfg)
    return cfg.freeze()


def dump_config(cfg: ConfigNode, path: str | os.PathLike) -> None:
    """Write cfg as YAML (plain types; loads back with load_config), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def cfg_name(yaml_path: str | os.PathLike) -> str:
    """The config's file stem ("base_q2a_4x16G_fp32"), used for output folders."""
    return Path(yaml_path).stem
