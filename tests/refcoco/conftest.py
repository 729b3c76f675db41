"""Fixtures of the RefCOCO+ tests: the small toy world, a vocabulary-only BERT folder and a tiny config."""
from __future__ import annotations

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY_CFG = os.path.join(REPO, "cfgs", "refcoco", "toy_cpu.yaml")


@pytest.fixture(scope="session")
def toy_root(small_world_root) -> str:
    """The small toy world (seed 0); RefCOCO+ files under <root>/coco/refcoco+."""
    return small_world_root


@pytest.fixture(scope="session")
def vocab_only_dir(vocab_only_bert_dir) -> str:
    return vocab_only_bert_dir


def tiny_overrides(bert_dir: str, data_dir: str) -> list[str]:
    """hidden 32, 2 layers, a random ResNet-18, 64-pixel images: the toy config shrunk to run in a second on CPU."""
    return [
        "NETWORK.BERT_MODEL_NAME", bert_dir, "NETWORK.IMAGE_PRETRAINED", "", "DATASET.DATASET_PATH", data_dir,
        "SCALES", "[48, 80]",
        "NETWORK.VLBERT.hidden_size", "32", "NETWORK.VLBERT.visual_size", "32", "NETWORK.IMAGE_FINAL_DIM", "32",
        "NETWORK.VLBERT.num_hidden_layers", "2", "NETWORK.VLBERT.num_attention_heads", "2",
        "NETWORK.VLBERT.intermediate_size", "64", "NETWORK.VLBERT.hidden_dropout_prob", "0.0",
        "NETWORK.VLBERT.attention_probs_dropout_prob", "0.0",
    ]


@pytest.fixture
def tiny_opts(toy_root, vocab_only_dir) -> list[str]:
    """`KEY VALUE` overrides that turn cfgs/refcoco/toy_cpu.yaml into the tiny model on the small toy world."""
    return tiny_overrides(vocab_only_dir, os.path.join(toy_root, "coco"))


@pytest.fixture
def tiny_cfg(tiny_opts):
    """Factory: tiny_cfg(*extra_overrides) -> frozen config of the toy file shrunk by `tiny_overrides`."""
    from common.config import load_config
    from refcoco.config import add_refcoco_defaults

    def make(*extra: str):
        return load_config(TOY_CFG, tiny_opts + list(extra), add_task_defaults=add_refcoco_defaults)

    return make
