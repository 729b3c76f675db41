"""retrieval/train_end2end.py writes a checkpoint the test script reads; retrieval/test.py under two processes
writes the same result file as under one."""
from __future__ import annotations

import glob
import json
import os

import pytest
import torch
from retrieval_fixtures import TOY_CFG, tiny_overrides

from common.engine.entry import train_main
from retrieval.task import RETRIEVAL
from tests.script_runs import one_and_two_processes


def test_training_writes_a_checkpoint_with_every_part(small_world_root, vocab_only_bert_dir, tmp_path):
    train_main(RETRIEVAL, ["--cfg", TOY_CFG, "OUTPUT_PATH", str(tmp_path), "TRAIN.END_EPOCH", "1",
                           "TRAIN.BATCH_IMAGES", "25", *tiny_overrides(vocab_only_bert_dir, small_world_root)])
    paths = glob.glob(str(tmp_path / "**" / "vl-bert_toy_prec_retrieval-0000.model"), recursive=True)
    assert len(paths) == 1
    state = torch.load(paths[0], weights_only=True)["state_dict"]
    for prefix in ("final_mlp.", "itc_text_proj.", "itc_image_proj.", "aux_text_visual_embedding.", "vlbert."):
        assert any(k.split("module.", 1)[-1].startswith(prefix) for k in state), prefix


@pytest.mark.slow  # 25-50 s: four Python processes on a 2-core machine
def test_two_processes_write_the_same_file_as_one(retrieval_tiny_checkpoint, small_world_root, vocab_only_bert_dir,
                                                  tmp_path):
    """retrieval/test.py under dist_run_single.sh 2 (each rank a share of the embeddings, of the similarity chunks
    and of the pairs) = under nondist_run.sh, byte for byte."""
    _, ckpt = retrieval_tiny_checkpoint
    one, two, output = one_and_two_processes(
        tmp_path, "retrieval/test.py", TOY_CFG, ["--ckpt", ckpt, "--result-name", "t", "--k", "4", "--chunk", "6",
                                                 "--bs", "4"],
        tiny_overrides(vocab_only_bert_dir, small_world_root))
    assert list(one) == ["t_retrieval_test.json"] and one == two
    document = json.loads(one["t_retrieval_test.json"])
    assert document["checkpoint"] == ckpt and os.path.isfile(ckpt)
    assert "world size 2" in output or "2 process(es)" in output
