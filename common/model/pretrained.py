"""All weight loading into VL-BERT: BERT (old pytorch-pretrained-BERT and today's Hugging Face layouts) and
released VL-BERT / task checkpoints through NETWORK.PARTIAL_PRETRAIN with its prefix-change rules.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from common.model.state_dict_io import (
    CheckpointError,
    load_state_dict_with_report,
    read_checkpoint_file,
    summarize_keys,
)

log = logging.getLogger(__name__)

BERT_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
BERT_CONFIG_FILES = ("config.json", "bert_config.json")
_MODEL_PREFIXES = ("module.", "bert.", "roberta.")
# checkpoint prefix (after the model prefix is stripped) -> VL-BERT prefix; loaded by name, shapes must match
_ROUTES = (
    ("embeddings.LayerNorm.", "embedding_LayerNorm."),
    ("encoder.", "encoder."),
    ("pooler.", "pooler."),
    ("cls.predictions.", "mlm_head.predictions."),
    ("cls.seq_relationship.", "relationsip_head.caption_image_relationship."),
)
_RENAMES = (("lm_head.dense.", "cls.predictions.transform.dense."),
            ("lm_head.layer_norm.", "cls.predictions.transform.LayerNorm."),
            ("lm_head.bias", "cls.predictions.bias"))
_IGNORED = ("embeddings.position_ids", "cls.predictions.decoder.weight", "lm_head.decoder.weight")  # buffer / tied


# ---- reading ---------------------------------------------------------------------------------------------------
def strip_module_prefix(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop the `module.` prefix that DDP/DataParallel add to every key."""
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}


def checkpoint_state_dict(obj: Mapping, path: str) -> dict[str, Tensor]:
    """A training checkpoint (`{"state_dict": ..., "optimizer": ...}`) or a plain state dict -> the state dict."""
    if "state_dict" in obj:
        obj = obj["state_dict"]
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{path}: 'state_dict' holds a {type(obj).__name__}, not a dict of tensors")
    if not obj:
        raise CheckpointError(f"{path}: not a checkpoint (empty dict)")
    for key, value in obj.items():
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{path}: not a checkpoint: key {key!r} holds a {type(value).__name__}, "
                                  f"expected a tensor (or a dict with a 'state_dict' entry)")
    return dict(obj)


def find_bert_files(path_or_dir: str) -> tuple[str, str | None]:
    """(weights file, config file or None) for a BERT folder in either layout, or for a weights file itself."""
    if os.path.isfile(path_or_dir):
        folder, weights = os.path.dirname(path_or_dir), path_or_dir
    elif os.path.isdir(path_or_dir):
        folder = path_or_dir
        found = [os.path.join(folder, n) for n in BERT_WEIGHT_FILES if os.path.isfile(os.path.join(folder, n))]
        if not found:
            raise CheckpointError(f"{path_or_dir}: no BERT weights found (expected one of {list(BERT_WEIGHT_FILES)})")
        weights = found[0]
    else:
        raise CheckpointError(f"BERT checkpoint not found: {path_or_dir} (see model/pretrained_model/"
                              f"PREPARE_PRETRAINED_MODELS.md)")
    configs = [os.path.join(folder, n) for n in BERT_CONFIG_FILES if os.path.isfile(os.path.join(folder, n))]
    return weights, (configs[0] if configs else None)


def normalize_bert_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Strip `module.`/`bert.`/`roberta.`, rename `gamma`/`beta` -> `weight`/`bias` and RoBERTa's `lm_head.*`."""
    out = {}
    for key, value in state_dict.items():
        for prefix in _MODEL_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.endswith(".gamma"):
            key = key[: -len("gamma")] + "weight"
        elif key.endswith(".beta"):
            key = key[: -len("beta")] + "bias"
        for old, new in _RENAMES:
            if key.startswith(old):
                key = new + key[len(old):]
        out[key] = value
    return out


def _check_bert_config(model: nn.Module, config_file: str | None) -> None:
    """Architecture numbers of the BERT folder must match NETWORK.VLBERT (head count is invisible to shapes)."""
    if config_file is None:
        return
    with open(config_file, encoding="utf-8") as handle:
        bert_cfg = json.load(handle)
    ours = {"hidden_size": model.hidden_size, "num_hidden_layers": len(model.encoder.layer),
            "num_attention_heads": model.encoder.layer[0].attention.self.num_heads}
    for key, value in ours.items():
        if key in bert_cfg and int(bert_cfg[key]) != int(value):
            raise CheckpointError(f"{config_file}: {key} is {bert_cfg[key]} but NETWORK.VLBERT.{key} is {value}")


# ---- BERT -> VL-BERT ---------------------------------------------------------------------------------------------
@torch.no_grad()
def _copy_embedding_tables(model: nn.Module, bert: dict[str, Tensor], source: str) -> list[str]:
    """Word and position tables are replaced wholesale; token types: rows 0-1 copied, row 2 (visual) kept."""
    loaded = []
    hidden = model.hidden_size
    for name in ("word_embeddings", "position_embeddings"):
        key, target = f"embeddings.{name}.weight", getattr(model, name)
        if key not in bert:
            continue
        table = bert[key]
        wrong_vocab = name == "word_embeddings" and table.shape != target.weight.shape
        if table.dim() != 2 or table.shape[1] != hidden or wrong_vocab:
            raise CheckpointError(f"{source}: shape mismatch at key {key}: checkpoint {tuple(table.shape)}, model "
                                  f"{tuple(target.weight.shape)} (check NETWORK.VLBERT.vocab_size / hidden_size)")
        if table.shape != target.weight.shape:
            log.warning("%s: %s has %d rows; replacing the model's %d", source, key, table.shape[0],
                        target.weight.shape[0])
            target.num_embeddings = table.shape[0]
        target.weight.data = table.to(target.weight.dtype, copy=True).to(target.weight.device)
        loaded.append(f"{name}.weight")
    key = "embeddings.token_type_embeddings.weight"
    if key in bert:
        table, own = bert[key], model.token_type_embeddings.weight
        if table.dim() != 2 or table.shape[1] != hidden:
            raise CheckpointError(f"{source}: shape mismatch at key {key}: checkpoint {tuple(table.shape)}, "
                                  f"model {tuple(own.shape)}")
        table = table.to(own.dtype).to(own.device)
        if table.shape[0] == 1:  # RoBERTa: one segment type, shared by text B and the visual tokens
            own[: min(3, own.shape[0])] = table[0]
        else:
            rows = min(2, table.shape[0], own.shape[0])
            own[:rows] = table[:rows]
        loaded.append("token_type_embeddings.weight")
    return loaded


def _expected_from_bert(model: nn.Module) -> list[str]:
    """Model keys a BERT checkpoint is expected to fill (for the missing-key report)."""
    prefixes = ["encoder.", "embedding_LayerNorm.", "pooler.", "relationsip_head.", "mlm_head.predictions.transform.",
                "mlm_head.predictions.bias"]
    keys = [k for k in model.state_dict() if any(k.startswith(p) for p in prefixes)]
    return keys + ["word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight"]


@torch.no_grad()
def load_bert_into_vlbert(model: nn.Module, path_or_dir: str) -> tuple[list[str], list[str]]:
    """Load a BERT checkpoint (folder or file, either layout) into a VisualLinguisticBert[ForPretraining].

    Mapping as the original (sheet §1.7); the MLM decoder stays tied to the word embeddings.
    Returns (missing model keys, unexpected checkpoint keys); logs one report.
    """
    weights_file, config_file = find_bert_files(path_or_dir)
    _check_bert_config(model, config_file)
    bert = normalize_bert_keys(checkpoint_state_dict(read_checkpoint_file(weights_file), weights_file))
    loaded = _copy_embedding_tables(model, bert, weights_file)
    own = model.state_dict()
    routed, unexpected = {}, []
    for key, value in bert.items():
        if (key.startswith("embeddings.") and key.endswith("_embeddings.weight")) or key in _IGNORED:
            continue
        target = next((new + key[len(old):] for old, new in _ROUTES if key.startswith(old)), None)
        if target is None or target not in own:
            unexpected.append(key)
            continue
        if tuple(value.shape) != tuple(own[target].shape):
            raise CheckpointError(f"{weights_file}: shape mismatch at key {key} (model key {target}): checkpoint "
                                  f"{tuple(value.shape)}, model {tuple(own[target].shape)}")
        routed[target] = value
    model.load_state_dict(routed, strict=False)
    if hasattr(model, "sync_special_word_embeddings"):
        model.sync_special_word_embeddings()
    loaded += list(routed)
    missing = [k for k in _expected_from_bert(model) if k not in loaded]
    report = log.warning if missing or unexpected else log.info
    report("%s: loaded %d tensors into VL-BERT; missing %d [%s]; unexpected %d [%s]", weights_file, len(loaded),
           len(missing), summarize_keys(missing), len(unexpected), summarize_keys(unexpected))
    return missing, unexpected


def resolve_bert_path(network_cfg) -> str | None:
    """`BERT_PRETRAINED-{BERT_PRETRAINED_EPOCH:04d}.model` if set, else the BERT_MODEL_NAME folder, else None."""
    if network_cfg.VLBERT.get("from_scratch", False):  # a pre-training key, absent from the other tasks
        log.info("NETWORK.VLBERT.from_scratch is set: no BERT weights are loaded")
        return None
    prefix = network_cfg.BERT_PRETRAINED
    if prefix:
        return f"{prefix}-{int(network_cfg.BERT_PRETRAINED_EPOCH):04d}.model"
    name = network_cfg.BERT_MODEL_NAME
    if name and (os.path.isfile(name) or any(os.path.isfile(os.path.join(name, n)) for n in BERT_WEIGHT_FILES)):
        return name
    log.warning("no BERT weights at NETWORK.BERT_MODEL_NAME=%r (expected %s): training VL-BERT from scratch",
                name, " or ".join(BERT_WEIGHT_FILES))
    return None


# ---- NETWORK.PARTIAL_PRETRAIN ------------------------------------------------------------------------------------
def parse_prefix_changes(rules: Iterable) -> list[tuple[str, str]]:
    """`["old->new", ...]` (or (old, new) pairs) -> list of pairs; a malformed rule names the config key."""
    pairs = []
    for rule in rules or ():
        if isinstance(rule, str) and rule.count("->") == 1:
            old, new = rule.split("->")
            pairs.append((old.strip(), new.strip()))
        elif isinstance(rule, (tuple, list)) and len(rule) == 2:
            pairs.append((str(rule[0]), str(rule[1])))
        else:
            raise ValueError(f"NETWORK.PARTIAL_PRETRAIN_PREFIX_CHANGES: rule {rule!r} is not of the form 'old->new'")
    return pairs


def apply_prefix_changes(state_dict: Mapping[str, Tensor], rules: Iterable) -> dict[str, Tensor]:
    """Rewrite each key by the first rule (in list order) whose old prefix it starts with; others are kept."""
    pairs = parse_prefix_changes(rules)
    out = {}
    for key, value in state_dict.items():
        for old, new in pairs:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def _match_key(key: str, own: Mapping[str, Tensor]) -> str | None:
    """The key as given, else with `module.` added, else with `module.` stripped."""
    for candidate in (key, "module." + key, key[len("module."):] if key.startswith("module.") else None):
        if candidate is not None and candidate in own:
            return candidate
    return None


@torch.no_grad()
def load_partial_pretrain(module: nn.Module, path: str, prefix_changes: Iterable = (),
                          key_map: Callable[[Mapping[str, Tensor]], dict[str, Tensor]] | None = None
                          ) -> dict[str, Tensor]:
    """Load the matching tensors of a VL-BERT checkpoint into `module` (model keys absent from it keep their values).

    `key_map` (a task's checkpoint key map) runs after the prefix changes, before the one load. Returns the
    checkpoint state dict after the prefix changes, for task-specific extra initialisation.
    """
    renamed = apply_prefix_changes(checkpoint_state_dict(read_checkpoint_file(path), path), prefix_changes)
    own = module.state_dict()
    to_load: dict[str, Tensor] = {}
    for key, value in (renamed if key_map is None else key_map(renamed)).items():
        target = _match_key(key, own)
        if target is None:
            to_load[key] = value  # reported as unexpected
            continue
        if tuple(value.shape) != tuple(own[target].shape):
            raise CheckpointError(f"{path}: shape mismatch at key {key} (model key {target}): checkpoint "
                                  f"{tuple(value.shape)}, model {tuple(own[target].shape)}")
        to_load[target] = value.to(own[target].dtype) if value.is_floating_point() else value
    load_state_dict_with_report(module, to_load, source=path)
    return renamed
