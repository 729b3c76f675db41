"""Is a checkpoint this run's? Before a run resumes from a file (and before it writes anything), the config stored in
the file is compared with the run's on the keys that fix the model's shapes or what its weights and optimizer state
mean; a folder holding another experiment's checkpoints is refused by name, with the keys that differ.
"""
from __future__ import annotations

import fnmatch
from typing import Any

# Flattened config keys ("NETWORK.VLBERT.hidden_size", "DATASET.0.DATASET" for a list of dataset sections); the
# others (paths, dropout, batch sizes, learning rates, speed switches) may change between a run and its resume.
EXPERIMENT_KEYS = (
    "MODULE",
    "DATASET.DATASET",
    "DATASET.*.DATASET",
    "*VOCAB_SIZE",
    "*vocab_size",
    "TRAIN.OPTIMIZER",
    "NETWORK.IMAGE_FEAT_PRECOMPUTED",
    "NETWORK.IMAGE_NUM_LAYERS",
    "NETWORK.IMAGE_FINAL_DIM",
    "NETWORK.IMAGE_SEMANTIC",
    "NETWORK.CLASSIFIER_TYPE",
    "NETWORK.CLASSIFIER_HIDDEN_SIZE",
    "NETWORK.VLBERT.hidden_size",
    "NETWORK.VLBERT.visual_size",
    "NETWORK.VLBERT.num_hidden_layers",
    "NETWORK.VLBERT.num_attention_heads",
    "NETWORK.VLBERT.intermediate_size",
    "NETWORK.VLBERT.type_vocab_size",
    "NETWORK.VLBERT.max_position_embeddings",
    "NETWORK.VLBERT.with_pooler",
    "NETWORK.VLBERT.visual_ln",
    "NETWORK.VLBERT.object_word_embed_mode",
)


class ResumeMismatchError(ValueError):
    """The checkpoint found for resuming was written by a different experiment."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"A": {"B": 1}, "L": [{"C": 2}]} -> {"A.B": 1, "L.0.C": 2}; lists of plain values stay values."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)) and tree and all(isinstance(v, dict) for v in tree):
        items = ((str(k), v) for k, v in enumerate(tree))
    else:
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def experiment_differences(saved: dict, current: dict) -> list[str]:
    """`KEY: checkpoint X, this run Y` for every experiment key both configs hold with different values."""
    saved_flat, current_flat = flatten(saved), flatten(current)
    lines = []
    for key in sorted(saved_flat.keys() & current_flat.keys()):
        if not any(fnmatch.fnmatchcase(key, pattern) for pattern in EXPERIMENT_KEYS):
            continue
        before, now = saved_flat[key], current_flat[key]
        if _normalised(before) != _normalised(now):
            lines.append(f"{key}: checkpoint {before!r}, this run {now!r}")
    return lines


def _normalised(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def check_same_experiment(saved: dict | None, current: dict, path: str) -> None:
    """Raise ResumeMismatchError naming `path` and the differing keys; a file without a config (an original
    checkpoint) passes, and its tensors are checked against the model when loaded."""
    if not saved or not current:
        return
    differences = experiment_differences(saved, current)
    if differences:
        raise ResumeMismatchError(
            f"{path}: this checkpoint was written by another experiment, so this run cannot resume from it; "
            f"differing keys: {'; '.join(differences)}. Give this config its own OUTPUT_PATH (or MODEL_PREFIX), or "
            f"set TRAIN.AUTO_RESUME false to train afresh here (the files of that experiment would be overwritten)")
