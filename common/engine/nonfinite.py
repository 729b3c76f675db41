"""Which items of a skipped step carry NaN or inf inputs, named by their dataset (`describe(index) -> str`).

The non-finite guard of the trainer (`skip_nonfinite_step`) calls `nonfinite_inputs(loader, micro_batches)`. A
sample is bad when any floating-point tensor of its batch row holds a NaN or inf (`image`, `box_features`,
`boxes`, ...). A dataset names its items with `describe(index)` (VQA: question, image and box file; VCR: jsonl
line, annot_id and image; ...); a dataset without it is named by index. Under the multi-task loader, keys with an
auxiliary prefix (`aux_text`, ...) belong to the auxiliary dataset.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

MAX_NAMED = 10  # items named in one message; the rest are counted


def loader_datasets(loader: Any) -> list[tuple[str, Any]]:
    """(key prefix, dataset) of every dataset a training loader draws from: "" for the main one."""
    datasets = getattr(loader, "datasets", None) or [getattr(loader, "dataset", None)]
    prefixes = [""] + list(getattr(loader, "prefixes", []))
    return list(zip(prefixes, datasets, strict=False))


def describe_item(dataset: Any, index: int) -> str:
    """`dataset.describe(index)`, or "dataset index i" for a dataset without it (or whose describe fails)."""
    describe = getattr(dataset, "describe", None)
    if callable(describe):
        try:
            return str(describe(index))
        except Exception as err:  # noqa: BLE001 - a message helper must not end the run
            return f"dataset index {index} (describe failed: {type(err).__name__}: {err})"
    return f"dataset index {index}"


def _own_keys(batch: dict, prefix: str, prefixes: list[str]) -> list[str]:
    others = [p for p in prefixes if p and p != prefix]
    return [k for k in batch if k.startswith(prefix) and not any(k.startswith(p) for p in others)]


def nonfinite_rows(batch: dict, prefix: str = "", prefixes: tuple[str, ...] | list[str] = ("",)) -> dict[int, list]:
    """Batch row -> names of the floating-point inputs (with `prefix`) holding a NaN or inf in that row."""
    rows: dict[int, list[str]] = {}
    index = batch.get(prefix + "index")
    if index is None:
        return rows
    size = len(torch.as_tensor(index).view(-1))
    for key in _own_keys(batch, prefix, list(prefixes)):
        value = batch[key]
        if not isinstance(value, Tensor) or not value.is_floating_point() or value.dim() == 0:
            continue
        if value.shape[0] != size or size == 0:
            continue
        bad = ~torch.isfinite(value.detach().reshape(size, -1)).all(1)
        for row in torch.nonzero(bad).view(-1).tolist():
            rows.setdefault(row, []).append(key[len(prefix):])
    return rows


def nonfinite_inputs(loader: Any, micro_batches: list[dict]) -> str:
    """One sentence for the guard's warning: the items whose inputs are non-finite, named, or that there are none."""
    sources = loader_datasets(loader)
    prefixes = [p for p, _ in sources]
    named: list[str] = []
    for batch in micro_batches:
        for prefix, dataset in sources:
            index = batch.get(prefix + "index")
            if index is None:
                continue
            ids = [int(i) for i in torch.as_tensor(index).view(-1).tolist()]
            for row, keys in sorted(nonfinite_rows(batch, prefix, prefixes).items()):
                named.append(f"{describe_item(dataset, ids[row])} [{', '.join(keys)}]")
    if not named:
        return ("no input of these samples holds a NaN or inf, so the model itself diverged (learning rate, loss "
                "scale or initial weights)")
    more = f" and {len(named) - MAX_NAMED} more" if len(named) > MAX_NAMED else ""
    return f"NaN or inf in the inputs of {len(named)} item(s): " + "; ".join(named[:MAX_NAMED]) + more
