"""Pretraining datasets by DATASET.DATASET name: `conceptual_captions`, `general_corpus`, `coco_captions`."""
from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import Dataset

from common.config import dataset_sections
from common.data.captions import ConceptualCaptionsDataset
from common.data.streaming import ShardSamples, make_shard_loader
from common.data.tokenizer import BertTokenizer, check_seq_len
from common.data.transforms import build_transform
from pretrain.datasets.caption_sample import CaptionSampleBuilder
from pretrain.datasets.coco_captions import COCOCaptionsDataset
from pretrain.datasets.general_corpus import GeneralCorpusDataset
from pretrain.datasets.streaming import FORMATS, build_shard_dataset

DATASET_NAMES = ("conceptual_captions", "general_corpus", "coco_captions")
_SPLIT_SECTION = {"train": "TRAIN", "val": "VAL", "test": "TEST"}


def _caption_builder(cfg, section, split: str, tokenizer: BertTokenizer) -> CaptionSampleBuilder:
    net = cfg.NETWORK
    return CaptionSampleBuilder(
        tokenizer, build_transform(cfg, split), seq_len=int(section.SEQ_LEN), with_rel_task=bool(net.WITH_REL_LOSS),
        with_mlm_task=bool(net.WITH_MLM_LOSS), with_mvrc_task=bool(net.WITH_MVRC_LOSS),
        mask_raw_pixels=bool(net.MASK_RAW_PIXELS) and not net.IMAGE_FEAT_PRECOMPUTED,
        add_image_as_a_box=bool(section.ADD_IMAGE_AS_A_BOX), max_positions=int(net.VLBERT.max_position_embeddings))


def build_section_dataset(cfg, section, split: str, tokenizer: BertTokenizer | None = None) -> Dataset:
    """The dataset of one DATASET section for split "train" / "val" / "test"."""
    if split not in _SPLIT_SECTION:
        raise ValueError(f"pretraining: split must be train, val or test, found {split!r}")
    tokenizer = tokenizer or BertTokenizer.from_pretrained_dir(cfg.NETWORK.BERT_MODEL_NAME)
    seed = max(int(cfg.RNG_SEED), 0)
    name, part = section.DATASET, _SPLIT_SECTION[split]
    if section.FORMAT not in FORMATS:
        raise ValueError(f"DATASET ({name}).FORMAT must be one of {list(FORMATS)}, found {section.FORMAT!r}")
    if section.FORMAT == "wds":
        builder = _caption_builder(cfg, section, split, tokenizer) if name == "conceptual_captions" else None
        return build_shard_dataset(cfg, section, split, tokenizer, builder)
    if name == "general_corpus":
        ann_file = section[f"{part}_ANNOTATION_FILE"]
        if not ann_file:
            raise ValueError(f"DATASET (general_corpus): {part}_ANNOTATION_FILE is empty")
        check_seq_len(int(section.SEQ_LEN), int(cfg.NETWORK.VLBERT.max_position_embeddings))
        return GeneralCorpusDataset(ann_file, tokenizer, seq_len=int(section.SEQ_LEN),
                                    min_seq_len=int(section.MIN_SEQ_LEN), with_mlm_task=bool(cfg.NETWORK.WITH_MLM_LOSS),
                                    seed=seed)
    image_set = section[f"{part}_IMAGE_SET"]
    if name == "conceptual_captions":
        return ConceptualCaptionsDataset(
            section.DATASET_PATH, image_set, _caption_builder(cfg, section, split, tokenizer),
            precomputed=bool(cfg.NETWORK.IMAGE_FEAT_PRECOMPUTED), zip_mode=bool(section.ZIP_MODE), seed=seed,
            skip_unreadable_images=bool(section.SKIP_UNREADABLE_IMAGES),
            num_classes=int(cfg.NETWORK.VLBERT.visual_region_classes) if cfg.NETWORK.WITH_MVRC_LOSS else None)
    if name == "coco_captions":
        if cfg.NETWORK.IMAGE_FEAT_PRECOMPUTED:
            raise ValueError("DATASET coco_captions has no precomputed features: set NETWORK.IMAGE_FEAT_PRECOMPUTED "
                             "false")
        return COCOCaptionsDataset(section.DATASET_PATH, image_set, _caption_builder(cfg, section, split, tokenizer),
                                   seed=seed, skip_unreadable_images=bool(section.SKIP_UNREADABLE_IMAGES))
    raise ValueError(f"DATASET.DATASET {name!r} is not a pretraining dataset; choose one of {list(DATASET_NAMES)}")


def loader_maker(make_loader: Callable) -> Callable:
    """The engine's `make_loader` for file datasets, wrapped so that a shard dataset gets its streaming loader."""

    def make(dataset, cfg, split: str, env, batch_size: int | None = None, seed_offset: int = 0):
        if isinstance(dataset, ShardSamples):
            return make_shard_loader(dataset, cfg, split, env, batch_size, seed_offset)
        return make_loader(dataset, cfg, split, env, batch_size=batch_size, seed_offset=seed_offset)

    return make


def build_pretrain_datasets(cfg, split: str) -> list[Dataset]:
    """One dataset per DATASET section (a list DATASET gives image captions + text corpus), sharing a tokenizer."""
    tokenizer = BertTokenizer.from_pretrained_dir(cfg.NETWORK.BERT_MODEL_NAME)
    return [build_section_dataset(cfg, section, split, tokenizer) for section in dataset_sections(cfg)]


__all__ = ["COCOCaptionsDataset", "ConceptualCaptionsDataset", "GeneralCorpusDataset", "build_pretrain_datasets",
           "build_section_dataset", "loader_maker"]
