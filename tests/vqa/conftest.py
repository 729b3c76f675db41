"""Fixtures of the VQA tests: the small toy world, a vocabulary-only BERT folder and a tiny config."""
from __future__ import annotations

import pytest
from vqa_fixtures import TOY_CFG, tiny_overrides


@pytest.fixture(scope="session")
def vqa_toy_root(small_world_root) -> str:
    """The small toy world (seed 0); VQA files under <root>/coco."""
    return small_world_root


@pytest.fixture(scope="session")
def vqa_vocab_only_dir(vocab_only_bert_dir) -> str:
    return vocab_only_bert_dir


@pytest.fixture
def vqa_tiny_cfg(vqa_toy_root, vqa_vocab_only_dir):
    """Factory: vqa_tiny_cfg(*extra_overrides) -> frozen config of the toy file shrunk by `tiny_overrides`."""
    from common.config import load_config
    from vqa.config import add_vqa_defaults

    def make(*extra: str):
        return load_config(TOY_CFG, tiny_overrides(vqa_vocab_only_dir, vqa_toy_root) + list(extra),
                           add_task_defaults=add_vqa_defaults)

    return make
