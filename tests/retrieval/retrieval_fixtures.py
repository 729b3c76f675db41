"""Helpers shared by the retrieval tests (a module with a unique name, importable from every test file)."""
from __future__ import annotations

import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY_CFG = os.path.join(REPO, "cfgs", "retrieval", "toy_cpu.yaml")


def tiny_overrides(bert_dir: str, root: str) -> list[str]:
    """The toy Flickr30K of `root`; hidden 32, 2 layers, no dropout: runs in seconds on CPU."""
    return ["DATASET.DATASET_PATH", os.path.join(root, "flickr30k"), "NETWORK.BERT_MODEL_NAME", bert_dir,
            "NETWORK.VLBERT.hidden_size", "32", "NETWORK.VLBERT.visual_size", "32", "NETWORK.IMAGE_FINAL_DIM", "32",
            "NETWORK.VLBERT.num_hidden_layers", "2", "NETWORK.VLBERT.num_attention_heads", "2",
            "NETWORK.VLBERT.intermediate_size", "64", "NETWORK.ITC_DIM", "16",
            "NETWORK.VLBERT.hidden_dropout_prob", "0.0", "NETWORK.VLBERT.attention_probs_dropout_prob", "0.0",
            "NETWORK.CLASSIFIER_DROPOUT", "0.0"]
