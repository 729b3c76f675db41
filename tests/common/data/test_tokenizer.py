"""WordPiece tokenizer: known pieces and ids on the real uncased MiniLM vocab, whole-word indices, cased detection."""
from __future__ import annotations

import os

import pytest

from common.data.tokenizer import BertTokenizer


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return BertTokenizer.from_pretrained_dir(minilm_dir)


def vocab_line(minilm_dir: str, token: str) -> int:
    with open(os.path.join(minilm_dir, "vocab.txt"), encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle].index(token)


def test_special_ids_and_size(tokenizer):
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == \
        (0, 100, 101, 102, 103)
    assert tokenizer.vocab_size == 30522 and tokenizer.lowercase


def test_known_words_give_known_pieces(tokenizer, minilm_dir):
    text = "The EMBEDDINGS of Café, isn't it? [MASK]"
    pieces = tokenizer.tokenize(text)
    assert pieces == ["the", "em", "##bed", "##ding", "##s", "of", "cafe", ",", "isn", "'", "t", "it", "?", "[MASK]"]
    ids = tokenizer.convert_tokens_to_ids(pieces)
    assert ids[:5] == [vocab_line(minilm_dir, p) for p in pieces[:5]] and ids[-1] == 103
    assert tokenizer.convert_ids_to_tokens(ids) == pieces
    assert tokenizer.convert_tokens_to_ids(["notapiece##"]) == [100]
    assert tokenizer.basic_tokenize(text) == ["the", "embeddings", "of", "cafe", ",", "isn", "'", "t", "it", "?",
                                              "[MASK]"]


def test_word_index_per_piece_for_whole_word_masking(tokenizer):
    pieces, words = tokenizer.tokenize_words(["A", "man", "embeddings", "rides!"])
    assert pieces == ["a", "man", "em", "##bed", "##ding", "##s", "rides", "!"]
    assert words == [0, 1, 2, 2, 2, 2, 3, 3]
    assert tokenizer.tokenize_words([]) == ([], [])


def test_greedy_longest_match_and_cased_vocab(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Play", "play", "##ing", "##in", "##g", "!"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    cased = BertTokenizer.from_pretrained_dir(str(tmp_path))
    assert not cased.lowercase  # "Play" has a capital: the vocab is cased
    assert cased.tokenize("Playing playing!") == ["Play", "##ing", "play", "##ing", "!"]
    assert cased.tokenize("PLAYING") == ["[UNK]"]
    lower = BertTokenizer(str(tmp_path / "vocab.txt"), lowercase=True)
    assert lower.tokenize("PLAYING") == ["play", "##ing"]


def test_missing_vocab_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        BertTokenizer.from_pretrained_dir(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"nothere\.txt"):
        BertTokenizer(str(tmp_path / "nothere.txt"))


def test_text_budget_fits_the_position_table(caplog):
    from common.data.tokenizer import check_seq_len, text_budget, truncate_to_budget

    # 64 positions, [CLS] q [SEP] [MASK] [SEP], 10 boxes, [END]: 64 - 4 - 10 - 1 = 49 question pieces
    assert text_budget(64, 4, 10) == 49 and text_budget(64, 2, 0) == 60  # no box: [END] still needs T + 1
    ids = list(range(1000, 1060))
    with caplog.at_level("WARNING"):
        assert truncate_to_budget(ids, 49, "question 7") == ids[:49]
    assert "question 7: text of 60 wordpieces cut to 49" in caplog.text
    assert truncate_to_budget(ids[:3], 49, "q") == ids[:3]
    with pytest.raises(ValueError, match="question 8: no room"):
        truncate_to_budget(ids, 0, "question 8")
    check_seq_len(62, 64)
    with pytest.raises(ValueError, match="DATASET.SEQ_LEN 63 does not fit NETWORK.VLBERT.max_position_embeddings 64"):
        check_seq_len(63, 64)
