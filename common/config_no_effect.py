"""The original's config keys that are accepted and ignored: one table, with the reason each one has no effect.

The original configs declare them and its YAMLs set them, so they load here; the loader logs one warning listing
those a config sets, and no code reads them (a test scans the tree). docs/CONFIG.md shows the same table.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from common.config_node import ConfigError, ConfigNode


@dataclass(frozen=True)
class NoEffectKey:
    """One accepted key: the original's default (a value set must have its type) and why nothing reads it.

    `every_task`: every task accepts it unless the task defines the key for real (VCR defines DATASET.TASK);
    otherwise only the tasks whose original config declared it accept it (`accept_no_effect_keys`).
    `fixed`: only the default is accepted, because the original refused other values or they are not implemented.
    """

    default: Any
    reason: str
    every_task: bool = True
    fixed: bool = False


_VCR = "a VCR key (vcr/config.py); the original declared it for every task, only VCR reads it"
_CACHE = "the original cached annotation databases under {ROOT_PATH}/cache/; here annotations are read directly"
_VQA = "a VQA key (vqa/config.py); the original's config of this task declared it, nothing here reads it"

NO_EFFECT_KEYS: Mapping[str, NoEffectKey] = MappingProxyType({
    "GPUS": NoEffectKey("", "devices come from the launcher (cuda:LOCAL_RANK); choose GPUs with CUDA_VISIBLE_DEVICES"),
    "DATASET.LABEL_INDEX_IN_BATCH": NoEffectKey(-1, "position of the label in the original's tuple batches; "
                                                    "batches are dicts with a `label` key (VCR's original value is 7)"),
    "DATASET.APPEND_INDEX": NoEffectKey(False, "every item carries its `index`"),
    "DATASET.TASK": NoEffectKey("Q2AR", _VCR),
    "DATASET.BASIC_ALIGN": NoEffectKey(False, "word alignment of question and answers; the original computed it "
                                              "and its model never used it"),
    "DATASET.ROOT_PATH": NoEffectKey("", _CACHE),
    "DATASET.IGNORE_DB_CACHE": NoEffectKey(True, _CACHE),
    "DATASET.CACHE_MODE": NoEffectKey(False, "keeping decoded images in memory; the original refused true",
                                      fixed=True),
    "DATASET.ONLY_USE_RELEVANT_DETS": NoEffectKey(True, _VCR),
    "DATASET.MASK_SIZE": NoEffectKey(14, _VCR),
    "DATASET.QA2R_NOQ": NoEffectKey(False, "VCR QA->R without the question is not implemented (no released "
                                           "config uses it)", fixed=True),
    "DATASET.QA2R_AUG": NoEffectKey(False, "VCR QA->R with all four answers as queries; the original refused true",
                                    fixed=True),
    "DATASET.ANSWER_VOCAB_FILE": NoEffectKey("", _VQA, every_task=False),
    "DATASET.ANSWER_VOCAB_SIZE": NoEffectKey(3129, _VQA, every_task=False),
    "DATASET.USE_IMDB": NoEffectKey(True, _VQA, every_task=False),
    "NETWORK.BLIND": NoEffectKey(False, _VCR),
    "NETWORK.NO_OBJ_ATTENTION": NoEffectKey(False, _VCR),
    "NETWORK.FOR_MASK_VL_MODELING_PRETRAIN": NoEffectKey(False, "a dead mode of the original VCR module, which "
                                                                "refused true", every_task=False, fixed=True),
    "NETWORK.BERT_FROZEN": NoEffectKey(True, "declared, never read by the original (freezing is "
                                             "VLBERT.word_embedding_frozen / pos_embedding_frozen)"),
    "NETWORK.BERT_ALIGN_QUESTION": NoEffectKey(True, "declared, never read by the original"),
    "NETWORK.BERT_ALIGN_ANSWER": NoEffectKey(True, "declared, never read by the original"),
    "NETWORK.BERT_USE_LAYER": NoEffectKey(-2, "declared, never read by the original"),
    "NETWORK.BERT_WITH_NSP_LOSS": NoEffectKey(False, "declared, never read by the original"),
    "NETWORK.BERT_WITH_MLM_LOSS": NoEffectKey(False, "only handed to the original VCR dataset, which ignored it"),
    "NETWORK.CNN_LOSS_WEIGHT": NoEffectKey(1.0, _VCR),
    "NETWORK.ANS_LOSS_WEIGHT": NoEffectKey(1.0, _VCR),
    "NETWORK.CLASSIFIER_SIGMOID": NoEffectKey(False, _VCR),
    "NETWORK.CLASSIFIER_SIGMOID_LOSS_POSITIVE_WEIGHT": NoEffectKey(1.0, _VCR),
    "NETWORK.ANS_LOSS_TYPE": NoEffectKey("bce", "the VQA and RefCOCO+ losses are always BCE", every_task=False),
    "NETWORK.REPLACE_OBJECT_CHANGE_LABEL": NoEffectKey(True, "read nowhere in the original (VCR read it only on a "
                                                             "dead path)", every_task=False),
    "NETWORK.CLASSIFIER_PRETRAINED": NoEffectKey(False, _VQA, every_task=False),
    "NETWORK.VLBERT.input_size": NoEffectKey(1280, "size of an input transform the original never built"),
    "NETWORK.VLBERT.input_transform_type": NoEffectKey(1, "documented as 1/2/3 transform variants; the original "
                                                          "never read it"),
    "TRAIN.VISUAL_SCALE_TEXT_LR_MULT": NoEffectKey(1.0, "never wired to the original's optimizer", every_task=False),
    "TRAIN.VISUAL_SCALE_OBJECT_LR_MULT": NoEffectKey(1.0, "never wired to the original's optimizer",
                                                     every_task=False),
    "TRAIN.VISUAL_SCALE_CLIP_GRAD_NORM": NoEffectKey(-1.0, "never wired to the original's gradient clipping",
                                                     every_task=False),
    "TEST.TEST_EPOCH": NoEffectKey(0, "the test scripts take the checkpoint path (--ckpt)"),
})


def no_effect_keys(cfg: ConfigNode) -> Mapping[str, Any]:
    """The no-effect keys this config accepts, dotted, with this task's default for each."""
    return MappingProxyType(cfg.__dict__.get("_no_effect", {}))


def accept_no_effect_keys(cfg: ConfigNode, *keys: str, values: Mapping[str, Any] | None = None) -> None:
    """Let this task's configs set these `NO_EFFECT_KEYS` (its original config declared them), at their defaults.

    `values` gives the original task's own default where it differed (also accepting those keys).
    """
    values = dict(values or {})
    accepted = dict(cfg.__dict__.get("_no_effect", {}))
    for key in dict.fromkeys([*keys, *values]):
        if key not in NO_EFFECT_KEYS:
            raise ValueError(f"{key} is not in NO_EFFECT_KEYS (common/config_no_effect.py)")
        parent, leaf = _parent(cfg, key)
        if leaf in parent and key not in accepted:
            raise ValueError(f"{key} is a key of this task's config; it cannot also be a key with no effect")
        default = values.get(key, NO_EFFECT_KEYS[key].default)
        parent[leaf] = default
        accepted[key] = default
    cfg._no_effect = accepted


def add_every_task_keys(cfg: ConfigNode) -> None:
    """Accept the `every_task` keys that the task's defaults neither define nor accepted already."""
    accepted = no_effect_keys(cfg)
    accept_no_effect_keys(cfg, *[key for key, entry in NO_EFFECT_KEYS.items()
                                 if entry.every_task and key not in accepted and not _defines(cfg, key)])


def _defines(cfg: ConfigNode, dotted: str) -> bool:
    parent, leaf = _parent(cfg, dotted)
    return leaf in parent


def _parent(cfg: ConfigNode, dotted: str) -> tuple[ConfigNode, str]:
    *sections, leaf = dotted.split(".")
    node = cfg
    for section in sections:
        node = node[section]
    return node, leaf


# ----- what a YAML or a command line set -------------------------------------------------------------------
def check_set(cfg: ConfigNode, schema_key: str, shown: str, value: Any, source: str) -> bool:
    """True when `schema_key` is a no-effect key of cfg; a fixed one set to another value raises ConfigError."""
    accepted = cfg.__dict__.get("_no_effect", {})
    if schema_key not in accepted:
        return False
    if NO_EFFECT_KEYS[schema_key].fixed and value != accepted[schema_key]:
        raise ConfigError(f"{source}: key {shown} only accepts {accepted[schema_key]!r}, found {value!r} "
                          f"({NO_EFFECT_KEYS[schema_key].reason})")
    return True


def no_effect_keys_set(cfg: ConfigNode, data: Mapping[str, Any], source: str) -> list[str]:
    """The no-effect keys (as shown to the user) that a merged YAML mapping set, in file order."""
    leaves = _leaves(data, "", "")
    return [shown for schema_key, shown, value in leaves if check_set(cfg, schema_key, shown, value, source)]


def _leaves(data: Any, schema: str, shown: str) -> Iterator[tuple[str, str, Any]]:
    """(schema key, shown key, value) of every leaf; list entries of sections (pretraining's DATASET) indexed."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield (f"{schema}{key}", f"{shown}{key}", value)
            yield from _leaves(value, f"{schema}{key}.", f"{shown}{key}.")
    elif isinstance(data, (list, tuple)) and all(isinstance(item, Mapping) for item in data):
        for i, item in enumerate(data):
            yield from _leaves(item, schema, f"{shown.rstrip('.')}[{i}].")


def warning_text(source: str, keys: list[str]) -> str:
    """The one warning of a load that set no-effect keys."""
    return (f"{source}: ignoring {len(keys)} key(s) accepted for compatibility with the original configs that have "
            f"no effect here (docs/CONFIG.md says why for each): {', '.join(keys)}")


def without_defaults(cfg: ConfigNode, data: dict[str, Any]) -> dict[str, Any]:
    """`data` (cfg.to_dict()) without the no-effect keys left at their defaults, for dumps."""
    for key, default in no_effect_keys(cfg).items():
        *sections, leaf = key.split(".")
        parents = [data]
        for section in sections:
            parents = [p[section] for p in parents]
            parents = [entry for p in parents for entry in (p if isinstance(p, list) else [p])]
        for parent in parents:
            if leaf in parent and parent[leaf] == _plain_default(default):
                del parent[leaf]
    return data


def _plain_default(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
