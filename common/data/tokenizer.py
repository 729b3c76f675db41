"""BERT WordPiece tokenisation over a `vocab.txt` (the `tokenizers` library), with the calls the task datasets use.

Behaves like the original `BertTokenizer` (basic tokenisation + greedy longest-match WordPiece, `[UNK]` fallback).
`text_budget` / `truncate_to_budget` keep a text within VL-BERT's position table (max_position_embeddings).
"""
from __future__ import annotations

import logging
import os
import re

from tokenizers import BertWordPieceTokenizer

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_ASCII_UPPER = re.compile("[A-Z]")


def read_vocab(vocab_file: str) -> list[str]:
    """One token a line; line number = id. Errors name the file."""
    if not os.path.isfile(vocab_file):
        raise FileNotFoundError(f"vocab file not found: {vocab_file} (expected BERT's vocab.txt, one token a line)")
    with open(vocab_file, encoding="utf-8") as handle:
        tokens = [line.rstrip("\n").rstrip("\r") for line in handle]
    while tokens and tokens[-1] == "":
        tokens.pop()
    missing = [t for t in SPECIAL_TOKENS if t not in tokens]
    if missing:
        raise ValueError(f"{vocab_file}: special tokens {missing} are not in the vocabulary")
    return tokens


def vocab_is_uncased(tokens: list[str]) -> bool:
    """An uncased BERT vocab has no ASCII capitals outside bracketed specials such as [CLS] or [unused0]."""
    return not any(_ASCII_UPPER.search(t) for t in tokens if not (t.startswith("[") and t.endswith("]")))


def text_budget(max_positions: int, num_special: int, num_boxes: int) -> int:
    """Wordpieces a text may keep so that one sequence fits the position table of `max_positions` rows.

    The packed sequence is text (with its `num_special` [CLS]/[SEP]/[MASK]), the boxes and [END]; the text takes
    positions 0..T-1, every box T, [END] T + 1, and the padding slots of a batch keep their index, so
    text + specials + max(boxes, 1) + 1 must not exceed max_positions.
    """
    return int(max_positions) - int(num_special) - max(int(num_boxes), 1) - 1


def truncate_to_budget(ids: list[int], budget: int, item: str) -> list[int]:
    """The first `budget` ids (the end is cut, as the original's caption and VCR truncation did), with a warning
    naming `item`; a budget below 1 (the boxes alone fill the table) is a ValueError naming it."""
    if len(ids) <= budget:
        return ids
    if budget < 1:
        raise ValueError(f"{item}: no room for any text in NETWORK.VLBERT.max_position_embeddings (the boxes fill it)")
    log.warning("%s: text of %d wordpieces cut to %d to fit NETWORK.VLBERT.max_position_embeddings", item, len(ids),
                budget)
    return ids[:budget]


def check_seq_len(seq_len: int, max_positions: int, key: str = "DATASET.SEQ_LEN") -> None:
    """A SEQ_LEN that bounds text + boxes must leave room for [END] (and its position T + 1) in the table."""
    if int(seq_len) + 2 > int(max_positions):
        raise ValueError(f"{key} {seq_len} does not fit NETWORK.VLBERT.max_position_embeddings {max_positions}: "
                         f"it must be at most {int(max_positions) - 2} (a text of SEQ_LEN tokens puts [END] at "
                         f"position SEQ_LEN + 1)")


class BertTokenizer:
    """WordPiece tokenizer over `vocab_file`; `lowercase=None` detects it from the vocabulary."""

    def __init__(self, vocab_file: str, lowercase: bool | None = None):
        self.vocab_file = vocab_file
        self._id_to_token = read_vocab(vocab_file)
        self.lowercase = vocab_is_uncased(self._id_to_token) if lowercase is None else lowercase
        self._backend = BertWordPieceTokenizer(vocab_file, lowercase=self.lowercase, unk_token="[UNK]",
                                               sep_token="[SEP]", cls_token="[CLS]", pad_token="[PAD]",
                                               mask_token="[MASK]", wordpieces_prefix="##")
        self._vocab = {token: index for index, token in enumerate(self._id_to_token)}

    @classmethod
    def from_pretrained_dir(cls, directory: str, lowercase: bool | None = None) -> BertTokenizer:
        """`directory/vocab.txt` (or a path to the vocab file itself)."""
        vocab_file = directory if os.path.isfile(directory) else os.path.join(directory, "vocab.txt")
        if not os.path.isfile(vocab_file):
            raise FileNotFoundError(f"no vocab.txt in {directory} (NETWORK.BERT_MODEL_NAME should name a BERT folder "
                                    f"holding vocab.txt; see model/pretrained_model/PREPARE_PRETRAINED_MODELS.md)")
        return cls(vocab_file, lowercase=lowercase)

    # ---- tokenisation --------------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        """Text -> WordPiece tokens (no [CLS]/[SEP] added)."""
        return self._backend.encode(text, add_special_tokens=False).tokens

    def basic_tokenize(self, text: str) -> list[str]:
        """Text -> normalised words (lower-cased/accent-stripped when uncased, punctuation split); specials kept."""
        encoding = self._backend.encode(text, add_special_tokens=False)
        spans: dict[int, list[int]] = {}
        for word, (start, end) in zip(encoding.word_ids, encoding.offsets, strict=True):
            span = spans.setdefault(word, [start, end])
            span[0], span[1] = min(span[0], start), max(span[1], end)
        words = []
        for word in sorted(spans):
            raw = text[spans[word][0]:spans[word][1]]
            words.append(raw if raw in SPECIAL_TOKENS else self._backend.normalizer.normalize_str(raw))
        return words

    def tokenize_words(self, words: list[str]) -> tuple[list[str], list[int]]:
        """Pre-split words -> (pieces, index of the input word of each piece), for whole-word masking."""
        if not words:
            return [], []
        encoding = self._backend.encode(list(words), is_pretokenized=True, add_special_tokens=False)
        return list(encoding.tokens), [int(w) for w in encoding.word_ids]

    # ---- vocabulary ----------------------------------------------------------------------------------------
    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        """Unknown tokens map to [UNK]."""
        return [self._vocab.get(t, self.unk_id) for t in tokens]

    def convert_ids_to_tokens(self, ids) -> list[str]:
        out = []
        for index in ids:
            index = int(index)
            if not 0 <= index < len(self._id_to_token):
                raise IndexError(f"token id {index} outside the vocabulary of {self.vocab_file} "
                                 f"({len(self._id_to_token)} entries)")
            out.append(self._id_to_token[index])
        return out

    @property
    def vocab(self) -> dict[str, int]:
        return self._vocab

    @property
    def vocab_size(self) -> int:
        return len(self._id_to_token)

    @property
    def cls_id(self) -> int:
        return self._vocab["[CLS]"]

    @property
    def sep_id(self) -> int:
        return self._vocab["[SEP]"]

    @property
    def mask_id(self) -> int:
        return self._vocab["[MASK]"]

    @property
    def pad_id(self) -> int:
        return self._vocab["[PAD]"]

    @property
    def unk_id(self) -> int:
        return self._vocab["[UNK]"]

    def __len__(self) -> int:
        return self.vocab_size
