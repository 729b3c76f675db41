"""Pretraining from webdataset shards (DATASET.FORMAT: wds): image captions and text corpus lines decoded from
shard samples and built by the same builders as the file datasets, so an item equals the file dataset's item of
the same index and epoch (the relationship negative aside, drawn from the captions the worker read last).

Text lines are joined with the lines after them within their shard (the file dataset wraps over the whole corpus),
so only the last lines of a shard can differ from the file dataset's items.
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator

from PIL import Image

from common.data.captions import CAPTION_PAD_RULES, detector_regions, raw_caption_sample
from common.data.masking import item_rng
from common.data.shards import expand_shards, read_sidecar
from common.data.streaming import ShardSamples
from common.data.tokenizer import BertTokenizer, check_seq_len
from pretrain.datasets.caption_sample import CaptionSampleBuilder
from pretrain.datasets.general_corpus import CORPUS_RNG_STREAM, CorpusSampleBuilder, joined_words
from pretrain.datasets.shard_format import (
    box_record,
    decode_image,
    image_member,
    member,
    read_meta,
    sample_index,
)

log = logging.getLogger(__name__)
FORMATS = ("files", "wds")
NEGATIVE_POOL = 1024  # captions a worker keeps to draw relationship negatives from


def _where(sample: dict) -> str:
    return f"shard {sample.get('__shard__')} key {sample.get('__key__')!r}"


class CaptionShardSource:
    """Image-caption shard samples -> `CaptionSampleBuilder` items (end-to-end or precomputed)."""

    PAD_RULES = CAPTION_PAD_RULES

    def __init__(self, builder: CaptionSampleBuilder, precomputed: bool, num_classes: int | None, seed: int = 0,
                 skip_unreadable_images: bool = False):
        self.builder, self.precomputed, self.num_classes, self.seed = builder, precomputed, num_classes, seed
        self.skip_unreadable_images = skip_unreadable_images
        self._captions: deque[list[str]] = deque(maxlen=NEGATIVE_POOL)

    def prepare_shard(self, samples: Iterator[dict]) -> Iterator[dict]:
        return samples

    def build(self, sample: dict, epoch: int) -> dict:
        where = _where(sample)
        meta = read_meta(sample, where)
        record = box_record(sample, meta, where, self.precomputed)
        regions = detector_regions(record, where, self.num_classes, self.precomputed)
        image = None if self.precomputed else self._image(sample, record, where)
        raw = raw_caption_sample(regions, image, record, meta["caption"], where)
        index = sample_index(sample["__key__"], meta)
        pool = list(self._captions)
        negative = (lambda rng: pool[int(rng.integers(len(pool)))]) if pool else None
        item = self.builder.build(raw, index, item_rng(self.seed, epoch, index), negative)
        self._captions.append(raw.words)
        return item

    def _image(self, sample: dict, record: dict, where: str) -> Image.Image:
        """The decoded image; with DATASET.SKIP_UNREADABLE_IMAGES a black one of the recorded size in place of a
        missing or undecodable member (as the file datasets do), else the sample is bad (skipped and counted)."""
        try:
            return decode_image(image_member(sample, where), where)
        except ValueError as err:
            width, height = record.get("image_w"), record.get("image_h")
            if not self.skip_unreadable_images or width is None or height is None:
                raise
            log.warning("%s; using a black %dx%d image instead (DATASET.SKIP_UNREADABLE_IMAGES)", err, width, height)
            return Image.new("RGB", (int(width), int(height)))


class CorpusShardSource:
    """Text shard samples (`txt`, one corpus line each) -> `CorpusSampleBuilder` items; each line is joined with
    the lines after it in its shard up to MIN_SEQ_LEN words, before the shuffle."""

    PAD_RULES = CorpusSampleBuilder.PAD_RULES

    def __init__(self, builder: CorpusSampleBuilder, min_seq_len: int, seed: int = 0):
        self.builder, self.min_seq_len, self.seed = builder, int(min_seq_len), seed

    def prepare_shard(self, samples: Iterator[dict]) -> Iterator[dict]:
        good, bad = [], []
        for sample in samples:  # a shard of text lines is small: hold it to join lines
            try:
                text = member(sample, "txt", _where(sample)).decode("utf-8").strip()
            except (ValueError, UnicodeDecodeError) as err:
                bad.append({**sample, "__error__": f"{_where(sample)}: {err}"})
                continue
            if text:
                good.append((sample, text))
        lines = [text for _, text in good]
        tokenize = self.builder.tokenizer.basic_tokenize
        for position, (sample, _) in enumerate(good):
            yield {"__key__": sample["__key__"], "__shard__": sample["__shard__"],
                   "__position__": sample.get("__position__", 0),
                   "words": joined_words(lines, position, self.min_seq_len, tokenize)}
        yield from bad

    def build(self, sample: dict, epoch: int) -> dict:
        if "__error__" in sample:
            raise ValueError(sample["__error__"])
        index = sample_index(sample["__key__"])
        return self.builder.build(sample["words"], index, item_rng(self.seed, epoch, index, CORPUS_RNG_STREAM))


def check_shard_content(shards: list[str], precomputed: bool, key: str) -> None:
    """Fail early when make_shards' record of the first shard says it lacks what the mode reads."""
    record = read_sidecar(shards[0]) or {}
    content = record.get("content")
    needed = "features" if precomputed else "images"
    if content in ("images", "features") and content != needed:
        raise ValueError(f"{key}: {shards[0]} holds {content} only, but NETWORK.IMAGE_FEAT_PRECOMPUTED is "
                         f"{precomputed} (needs {needed}); write the shards with --content {needed} or both")


def build_shard_dataset(cfg, section, split: str, tokenizer: BertTokenizer, caption_builder=None) -> ShardSamples:
    """The ShardSamples of one DATASET section with FORMAT wds for split "train" / "val" / "test"."""
    part = {"train": "TRAIN", "val": "VAL", "test": "TEST"}[split]
    key = f"DATASET ({section.DATASET}).{part}_SHARDS"
    shards = expand_shards(section[f"{part}_SHARDS"], section.DATASET_PATH, key)
    seed = max(int(cfg.RNG_SEED), 0)
    net = cfg.NETWORK
    if section.DATASET == "general_corpus":
        check_seq_len(int(section.SEQ_LEN), int(net.VLBERT.max_position_embeddings))
        builder = CorpusSampleBuilder(tokenizer, int(section.SEQ_LEN), bool(net.WITH_MLM_LOSS))
        source = CorpusShardSource(builder, int(section.MIN_SEQ_LEN), seed)
    elif section.DATASET == "conceptual_captions":
        check_shard_content(shards, bool(net.IMAGE_FEAT_PRECOMPUTED), key)
        num_classes = int(net.VLBERT.visual_region_classes) if net.WITH_MVRC_LOSS else None
        source = CaptionShardSource(caption_builder, bool(net.IMAGE_FEAT_PRECOMPUTED), num_classes, seed,
                                    bool(section.SKIP_UNREADABLE_IMAGES))
    else:
        raise ValueError(f"DATASET.FORMAT wds: {section.DATASET!r} has no shard reader (conceptual_captions and "
                         f"general_corpus have)")
    return ShardSamples(shards, source, train=split == "train", samples_per_epoch=int(section.SAMPLES_PER_EPOCH),
                        shuffle_buffer=int(section.SHUFFLE_BUFFER), resample=bool(section.RESAMPLE_SHARDS),
                        max_bad_fraction=float(section.MAX_BAD_SAMPLE_FRACTION), seed=seed, name=key)


__all__ = ["FORMATS", "CaptionShardSource", "CorpusShardSource", "build_shard_dataset"]
