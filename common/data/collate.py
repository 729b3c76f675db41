"""One collate for every task: datasets return dicts and declare a pad value per key (`PAD_RULES`).

Rule semantics: a number pads every variable dimension of that key's tensors to the batch maximum with that
value; `None` stacks tensors that must have equal shapes. Keys without a rule are stacked when they are tensors of
equal shape, turned into a tensor when they are plain numbers, and kept as lists otherwise (strings, ids, dicts).
Images (key "image") are padded bottom/right with 0, which equals the mean pixel after normalisation.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

DEFAULT_RULES = {"image": 0.0}


def pad_stack(tensors: Sequence[Tensor], value: float) -> Tensor:
    """Pad each tensor at the end of every dimension to the largest size in the batch, then stack: [B, ...]."""
    ndim = tensors[0].dim()
    if any(t.dim() != ndim for t in tensors):
        raise ValueError(f"collate: tensors of one key have different ranks {[t.dim() for t in tensors]}")
    shape = [max(t.shape[d] for t in tensors) for d in range(ndim)]
    out = tensors[0].new_full([len(tensors), *shape], value)
    for i, t in enumerate(tensors):
        out[(i, *(slice(0, s) for s in t.shape))] = t
    return out


def _collate_key(key: str, values: list, rules: Mapping[str, Any]) -> Any:
    first = values[0]
    if all(v is None for v in values):
        return None
    if isinstance(first, Tensor):
        rule = rules.get(key, "absent")
        if rule is None or (rule == "absent" and all(v.shape == first.shape for v in values)):
            try:
                return torch.stack(values)
            except RuntimeError as err:
                shapes = sorted({tuple(v.shape) for v in values})
                raise ValueError(
                    f"collate: key {key!r} must have one shape per batch (stacked), found {shapes}"
                ) from err
        if rule == "absent":
            return list(values)
        return pad_stack(values, float(rule))
    if isinstance(first, bool) or not isinstance(first, numbers.Number):
        return list(values)
    dtype = torch.long if isinstance(first, numbers.Integral) else torch.float32
    return torch.tensor(values, dtype=dtype)


def collate_dicts(items: Sequence[Mapping[str, Any]], pad_rules: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Batch a list of sample dicts (see the module docstring for the rules)."""
    if not items:
        raise ValueError("collate: empty batch")
    rules = {**DEFAULT_RULES, **(pad_rules or {})}
    keys = list(items[0].keys())
    for i, item in enumerate(items[1:], start=1):
        if set(item.keys()) != set(keys):
            raise ValueError(f"collate: sample {i} has keys {sorted(item)} but sample 0 has {sorted(keys)}")
    return {key: _collate_key(key, [item[key] for item in items], rules) for key in keys}


class DictCollate:
    """Picklable collate_fn bound to a dataset's PAD_RULES (DataLoader workers need a picklable object)."""

    def __init__(self, pad_rules: Mapping[str, Any] | None):
        self.pad_rules = dict(pad_rules or {})

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return collate_dicts(items, self.pad_rules)
