"""Fixtures of the pretraining tests: a small toy world on disk and the real uncased tokenizer."""
from __future__ import annotations

import logging

import pytest


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory) -> str:
    """The small toy world (seed 0), generated once per session."""
    from data.shape_world.generate import generate

    root = str(tmp_path_factory.mktemp("toy_world"))
    logging.getLogger("data").setLevel(logging.WARNING)
    generate(root, seed=0, size="small")
    return root


@pytest.fixture(scope="session")
def tokenizer(minilm_dir):
    from common.data.tokenizer import BertTokenizer

    return BertTokenizer.from_pretrained_dir(minilm_dir)
