"""Text-only pretraining corpus (`en_corpus/*.doc`): one sample per non-empty line, extended with the following
lines (wrapping) to at least MIN_SEQ_LEN words, whole-word masked, cut to SEQ_LEN word pieces.

`[CLS]`/`[SEP]` are added around every sample (the original added none). Reasons: BERT, which initialises
VL-BERT, only ever saw `[CLS] ... [SEP]` sequences, and every fine-tuning task feeds them, so text without them
is an input shape the model never meets again. The worry that text-only samples then look like captions does not
hold: in the multitask module every token of a text-only sample carries the learned `aux_text_visual_embedding`
instead of the whole-image feature, and the sample has no objects, so the two kinds stay distinguishable.
Pass `add_special_tokens=False` to get the original behaviour.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from common.data.masking import IGNORE_LABEL, EpochSeeded, WholeWordMasker, replacement_token_ids
from common.data.packed_strings import PackedStrings, PackedStringsBuilder
from common.data.tokenizer import BertTokenizer

log = logging.getLogger(__name__)
CORPUS_RNG_STREAM = 1  # the corpus draws its masks from a stream of its own (captions use 0)


def read_corpus_lines(ann_file: str, encoding: str = "utf-8") -> PackedStrings:
    """Stripped non-empty lines of every file in the '+'-joined `ann_file`, in order, packed (no Python object per
    line, so loader workers do not copy them page by page)."""
    lines = PackedStringsBuilder()
    for path in (p for p in ann_file.split("+") if p):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"text corpus file not found: {path} (from DATASET.*_ANNOTATION_FILE "
                                    f"{ann_file!r})")
        with open(path, encoding=encoding) as handle:
            for line in handle:
                if line.strip():
                    lines.append(line.strip())
    if not len(lines):
        raise ValueError(f"text corpus {ann_file!r} has no non-empty line")
    return lines.finish()


def joined_words(lines: Sequence[str], position: int, min_words: int,
                 basic_tokenize: Callable[[str], list[str]]) -> list[str]:
    """Basic-tokenised words of `lines[position]` and the lines after it (wrapping, each line at most once) until
    there are at least `min_words`."""
    words = basic_tokenize(lines[position])
    step = 1
    while len(words) < min_words and step < len(lines):
        words += basic_tokenize(lines[(position + step) % len(lines)])
        step += 1
    return words


class CorpusSampleBuilder:
    """Words -> item: word pieces cut to SEQ_LEN (with `[CLS]`/`[SEP]` unless `add_special_tokens` is false) and
    whole-word MLM. Shared by the file and the shard datasets."""

    PAD_RULES = {"text": 0, "mlm_labels": IGNORE_LABEL, "index": None}

    def __init__(self, tokenizer: BertTokenizer, seq_len: int = 64, with_mlm_task: bool = True,
                 add_special_tokens: bool = True):
        self.tokenizer, self.seq_len = tokenizer, int(seq_len)
        self.with_mlm_task, self.add_special_tokens = with_mlm_task, add_special_tokens
        if self.seq_len < (3 if add_special_tokens else 1):
            raise ValueError(f"DATASET.SEQ_LEN {seq_len} is too short for a text corpus sample")
        vocab = tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size))
        self.masker = WholeWordMasker(tokenizer.mask_id, replacement_token_ids(vocab))

    def build(self, words: list[str], index: int, rng: np.random.Generator) -> dict:
        pieces, word_index = self.tokenizer.tokenize_words(words)
        budget = self.seq_len - (2 if self.add_special_tokens else 0)
        ids = self.tokenizer.convert_tokens_to_ids(pieces[:budget])
        word_index = word_index[:budget]
        if self.add_special_tokens:
            ids = [self.tokenizer.cls_id] + ids + [self.tokenizer.sep_id]
            word_index = [-1] + word_index + [-1]
        if self.with_mlm_task:
            ids, labels = self.masker(ids, word_index, rng)
        else:
            labels = [IGNORE_LABEL] * len(ids)
        return {"text": torch.as_tensor(ids, dtype=torch.long), "mlm_labels": torch.as_tensor(labels, dtype=torch.long),
                "index": index}


class GeneralCorpusDataset(EpochSeeded, Dataset):
    """Items: `text` [T] word-piece ids, `mlm_labels` [T] (-1 where not masked), `index`."""

    PAD_RULES = CorpusSampleBuilder.PAD_RULES

    def __init__(self, ann_file: str, tokenizer: BertTokenizer, seq_len: int = 64, min_seq_len: int = 64,
                 with_mlm_task: bool = True, add_special_tokens: bool = True, seed: int = 0,
                 encoding: str = "utf-8"):
        self.ann_file, self.lines = ann_file, read_corpus_lines(ann_file, encoding)
        self.builder = CorpusSampleBuilder(tokenizer, seq_len, with_mlm_task, add_special_tokens)
        self.tokenizer, self.min_seq_len = tokenizer, int(min_seq_len)
        self.init_epoch_seed(seed, stream=CORPUS_RNG_STREAM)

    def __len__(self) -> int:
        return len(self.lines)

    def describe(self, index: int) -> str:
        """The item in words, for messages: its line among the corpus's non-empty lines."""
        return f"text corpus {self.ann_file} non-empty line {index + 1}"

    def words(self, index: int) -> list[str]:
        """Basic-tokenised words of line `index` and the lines after it (wrapping, each line at most once)."""
        return joined_words(self.lines, index, self.min_seq_len, self.tokenizer.basic_tokenize)

    def __getitem__(self, index: int) -> dict:
        return self.builder.build(self.words(index), index, self.item_rng(index))
