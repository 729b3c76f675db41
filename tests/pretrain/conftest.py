"""Fixtures of the pretraining tests: a small toy world on disk and the real uncased tokenizer."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def toy_root(small_world_root) -> str:
    """The small toy world (seed 0), generated once per session."""
    return small_world_root


@pytest.fixture(scope="session")
def tokenizer(minilm_dir):
    from common.data.tokenizer import BertTokenizer

    return BertTokenizer.from_pretrained_dir(minilm_dir)


def write_toy_shards(toy_root: str, out: str, content: str = "both") -> str:
    """The small toy world's captions and corpus as shards, as PREPARE_DATA.md ("The toy world as shards") writes
    them for cfgs/pretrain/toy_shards_cpu.yaml (content `both`, so end-to-end and precomputed tests share them)."""
    from data.make_shards import main

    cc, corpus = os.path.join(toy_root, "conceptual-captions"), os.path.join(toy_root, "en_corpus")
    for args in (["cc", "--root", cc, "--split", "train", "--samples-per-shard", "8", "--content", content],
                 ["cc", "--root", cc, "--split", "val", "--samples-per-shard", "4", "--content", content],
                 ["corpus", "--input", f"{corpus}/bc1g.doc+{corpus}/wiki.doc", "--samples-per-shard", "100"],
                 ["corpus", "--input", f"{corpus}/bc1g.doc", "--prefix", "corpus-val", "--samples-per-shard", "60"]):
        assert main([*args, "--out", out]) == 0
    return out


@pytest.fixture(scope="session")
def toy_shards(small_world_root, tmp_path_factory) -> str:
    """Folder of the small toy world's shards (train-*, val-*, corpus-*, corpus-val-*). Read-only: tests that break
    shards copy them first."""
    return write_toy_shards(small_world_root, str(tmp_path_factory.mktemp("toy_shards")))
