"""TRAIN.DATA_PARALLEL zero1 and fsdp on toy multitask pretraining (captions with visual clues + text corpus, MLM and
MVRC heads with LR_MULT groups, 0-dim visual gates) through `dist_run_single.sh 2`: losses and weights as ddp's.

The three runs draw the same masks and flips (per-rank seeds, the same world size). zero1 is bitwise (the same
AdamW maths per parameter on the same all-reduced gradients). fsdp reduce-scatters instead of all-reducing, so sums
may differ in the last bits: losses at 1e-5 relative (the log prints 6 decimals) and weights at 1e-6 (measured after
the 6 steps: 5e-10 at most).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from common.model.state_dict_io import read_checkpoint_file
from tests.script_runs import run_launcher

CFG = "cfgs/pretrain/toy_cpu.yaml"
RUN_DIR = Path("output", "toy", "pretrain", "toy_cpu", "train_train")
PREFIX = "vl-bert_toy_pretrain_multitask"
LOSS = re.compile(r"Batch \[(\d+)\].*?Train-Loss=([-0-9.e]+)")
TINY = ["NETWORK.VLBERT.hidden_size", "32", "NETWORK.VLBERT.visual_size", "32", "NETWORK.IMAGE_FINAL_DIM", "32",
        "NETWORK.VLBERT.num_hidden_layers", "2", "NETWORK.VLBERT.num_attention_heads", "2",
        "NETWORK.VLBERT.intermediate_size", "64", "NETWORK.VLBERT.hidden_dropout_prob", "0.0",
        "NETWORK.VLBERT.attention_probs_dropout_prob", "0.0", "NETWORK.VLBERT.visual_ln", "false",
        "TRAIN.END_EPOCH", "2", "LOG_FREQUENT", "1", "VAL_FREQUENT", "0"]


@pytest.mark.slow
def test_zero1_and_fsdp_pretrain_as_ddp(small_world_root, vocab_only_bert_dir, tmp_path):
    corpus = os.path.join(small_world_root, "en_corpus")
    overrides = ["NETWORK.BERT_MODEL_NAME", vocab_only_bert_dir,
                 "DATASET.0.DATASET_PATH", os.path.join(small_world_root, "conceptual-captions"),
                 "DATASET.1.TRAIN_ANNOTATION_FILE", f"{corpus}/bc1g.doc+{corpus}/wiki.doc",
                 "DATASET.1.VAL_ANNOTATION_FILE", f"{corpus}/bc1g.doc", *TINY]
    outputs = {mode: run_launcher(2, "pretrain/train_end2end.py", CFG, tmp_path / mode,
                                  [*overrides, "TRAIN.DATA_PARALLEL", mode], timeout=600)
               for mode in ("ddp", "zero1", "fsdp")}
    assert "2 small parameter(s) replicated" in outputs["fsdp"]
    losses = {mode: [(int(b), float(v)) for b, v in LOSS.findall(out)] for mode, out in outputs.items()}
    assert len(losses["ddp"]) >= 4 and losses["zero1"] == losses["ddp"]
    assert [b for b, _ in losses["fsdp"]] == [b for b, _ in losses["ddp"]]
    torch.testing.assert_close([v for _, v in losses["fsdp"]], [v for _, v in losses["ddp"]], rtol=1e-5, atol=0)
    final = {mode: read_checkpoint_file(str(tmp_path / mode / RUN_DIR / f"{PREFIX}-0001.model"))["state_dict"]
             for mode in outputs}
    assert any(key.startswith("vlbert.mvrc_head.") for key in final["ddp"])
    for key, expected in final["ddp"].items():
        assert torch.equal(final["zero1"][key], expected), key
        torch.testing.assert_close(final["fsdp"][key], expected, rtol=0, atol=1e-6, msg=key)
