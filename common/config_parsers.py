"""Parsers for the keys whose YAML form differs from their value: the original's quirks and DATASET lists.

Used by `common/config.py` when merging; each takes (value, source, dotted key) and raises ConfigError naming both.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.config_node import ConfigError, ConfigNode, Parser, merge_mapping, to_float, type_error

SPLITS = ("TRAIN", "VAL", "TEST")


def parse_lr_step(value: Any, source: str, dotted: str) -> tuple[float, ...]:
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


def parse_loss_loggers(value: Any, source: str, dotted: str) -> list[tuple[str, str]]:
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


def parse_loss_scale(value: Any, source: str, dotted: str) -> float | str:
    """A number, or "dynamic"."""
    if value == "dynamic":
        return value
    try:
        return to_float(value, source, dotted)
    except ConfigError:
        raise type_error(source, dotted, 'a number or "dynamic"', value) from None


def parse_auto_bool(value: Any, source: str, dotted: str) -> str | bool:
    """"auto", or a bool (TRAIN.FIND_UNUSED_PARAMETERS: a bool before "auto" existed)."""
    if value == "auto" or isinstance(value, bool):
        return value
    raise type_error(source, dotted, '"auto", true or false', value)


def parse_batch_images(value: Any, source: str, dotted: str) -> int | list[int]:
    """An int, or a list of ints (one per dataset when DATASET is a list)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items or any(isinstance(v, bool) or not isinstance(v, int) for v in items):
        raise type_error(source, dotted, "an int or a list of ints", value)
    return list(value) if isinstance(value, (list, tuple)) else value


def _dataset_parser(template: ConfigNode, parsers: Mapping[str, Parser], cfg: ConfigNode) -> Parser:
    """DATASET as a section (merged onto the current one) or a list of sections (each from the template)."""

    def parse(value: Any, source: str, dotted: str) -> ConfigNode | list[ConfigNode]:
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


def parsers_for(cfg: ConfigNode) -> dict[str, Parser]:
    """The parser of each key that has one (by schema key, e.g. "TRAIN.LR_STEP"); DATASET's when lists are allowed."""
    parsers: dict[str, Parser] = {
        "TRAIN.LR_STEP": parse_lr_step,
        "TRAIN.LOSS_LOGGERS": parse_loss_loggers,
        "TRAIN.FP16_LOSS_SCALE": parse_loss_scale,
        "TRAIN.FIND_UNUSED_PARAMETERS": parse_auto_bool,
        **{f"{split}.BATCH_IMAGES": parse_batch_images for split in SPLITS},
    }
    template = cfg.__dict__.get("_dataset_template")
    if template is not None:
        parsers["DATASET"] = _dataset_parser(template, parsers, cfg)
    return parsers
