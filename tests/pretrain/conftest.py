"""Fixtures of the pretraining tests: a small toy world on disk and the real uncased tokenizer."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def toy_root(small_world_root) -> str:
    """The small toy world (seed 0), generated once per session."""
    return small_world_root


@pytest.fixture(scope="session")
def tokenizer(minilm_dir):
    from common.data.tokenizer import BertTokenizer

    return BertTokenizer.from_pretrained_dir(minilm_dir)
