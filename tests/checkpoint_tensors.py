"""Comparing checkpoints tensor by tensor, for the bitwise-resume tests: every tensor in a nested checkpoint
(weights, optimizer moments, generator states) by its path, and the paths whose tensors differ."""
from __future__ import annotations

import torch


def checkpoint_tensors(tree, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a checkpoint, by its path (`optimizer.state.3.exp_avg`, `rng.1.torch`, ...)."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    found: dict[str, torch.Tensor] = {}
    for key, value in items:
        found |= checkpoint_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    return found
