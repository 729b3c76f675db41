"""The pretraining plug-in for the shared engine: datasets per DATASET section, the multi-task loader, the three
modules and the metrics.

Loaders: one per DATASET section (per-dataset `BATCH_IMAGES`), always wrapped in `MultiTaskDataLoader` (with no
auxiliary loader for a single section), so every epoch reaches the samplers and the datasets' mask seeds.
"""
from __future__ import annotations

from torch.utils.data import Dataset

from common.config import dataset_sections
from common.config_node import ConfigNode
from common.data.loader import make_loader, split_batch_size
from common.data.multitask_loader import MultiTaskDataLoader
from common.engine.dist import DistEnv
from common.engine.task import Task
from pretrain.check import check_pretrain_data
from pretrain.config import add_pretrain_defaults
from pretrain.datasets import build_pretrain_datasets, loader_maker
from pretrain.metrics import build_pretrain_metrics
from pretrain.module import (
    ResNetVLBERTForAttentionVis,
    ResNetVLBERTForPretraining,
    ResNetVLBERTForPretrainingMultitask,
)

CAPTION_DATASETS = ("conceptual_captions", "coco_captions")
_SECTIONS = {"train": "TRAIN", "val": "VAL", "test": "TEST"}


def check_pretrain_config(cfg: ConfigNode) -> None:
    """The first DATASET section holds image captions; the multitask module needs a text corpus section after it."""
    names = [section.DATASET for section in dataset_sections(cfg)]
    if names[0] not in CAPTION_DATASETS:
        raise ValueError(f"DATASET[0].DATASET must be one of {list(CAPTION_DATASETS)} (image captions come first), "
                         f"found {names[0]!r}")
    for k, name in enumerate(names[1:], start=1):
        if name != "general_corpus":
            raise ValueError(f"DATASET[{k}].DATASET must be 'general_corpus' (auxiliary text-only data), "
                             f"found {name!r}")
    if cfg.MODULE == "ResNetVLBERTForPretrainingMultitask" and len(names) != 2:
        raise ValueError(f"MODULE ResNetVLBERTForPretrainingMultitask needs DATASET as a list of two sections "
                         f"(image captions, then general_corpus), found {names}")
    if cfg.MODULE == "ResNetVLBERTForPretraining" and len(names) != 1:
        raise ValueError(f"MODULE ResNetVLBERTForPretraining reads image captions only; DATASET lists {names} "
                         f"(use ResNetVLBERTForPretrainingMultitask)")


def build_pretrain_dataset(cfg: ConfigNode, split: str) -> Dataset:
    """The image-caption dataset of `split` (the master of the multi-task loader)."""
    check_pretrain_config(cfg)
    return build_pretrain_datasets(cfg, split)[0]


def build_pretrain_loader(cfg: ConfigNode, split: str, env: DistEnv) -> MultiTaskDataLoader:
    """`Task.build_loader`: one engine loader per DATASET section (its own batch size from the per-dataset
    `BATCH_IMAGES` list), zipped."""
    check_pretrain_config(cfg)
    make = loader_maker(make_loader)  # shard datasets (DATASET.FORMAT wds) get the streaming loader
    loaders = []
    for k, dataset in enumerate(build_pretrain_datasets(cfg, split)):
        if len(dataset) == 0:
            raise ValueError(f"pretrain: the {split} dataset of DATASET[{k}] ({dataset_sections(cfg)[k].DATASET}) "
                             f"is empty")
        loaders.append(make(dataset, cfg, split, env, batch_size=split_batch_size(cfg, split, k),
                                   seed_offset=k))
    return MultiTaskDataLoader(loaders)


TASK = Task(
    name="pretrain",
    add_defaults=add_pretrain_defaults,
    build_dataset=build_pretrain_dataset,
    modules={"ResNetVLBERTForPretraining": ResNetVLBERTForPretraining,
             "ResNetVLBERTForPretrainingMultitask": ResNetVLBERTForPretrainingMultitask,
             "ResNetVLBERTForAttentionVis": ResNetVLBERTForAttentionVis},
    build_metrics=build_pretrain_metrics,
    build_loader=build_pretrain_loader,
    check_data=check_pretrain_data,
)
