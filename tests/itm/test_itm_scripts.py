"""itm/test.py, the worked example of the evaluation seam: one record per pair with the model's own probability,
and an accuracy equal to the validation metric's."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch

from common.config import load_config
from common.data.collate import collate_dicts
from itm import test as itm_test
from itm.task import ITM, MatchAccuracy

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY_CFG = os.path.join(REPO, "cfgs", "itm", "toy_cpu.yaml")
TINY = ["NETWORK.VLBERT.hidden_size", "32", "NETWORK.VLBERT.visual_size", "32", "NETWORK.IMAGE_FINAL_DIM", "32",
        "NETWORK.VLBERT.num_hidden_layers", "2", "NETWORK.VLBERT.num_attention_heads", "2",
        "NETWORK.VLBERT.intermediate_size", "64", "NETWORK.VLBERT.hidden_dropout_prob", "0.0",
        "NETWORK.VLBERT.attention_probs_dropout_prob", "0.0", "NETWORK.CLASSIFIER_DROPOUT", "0.0"]


def test_result_file_scores_every_pair_as_a_direct_forward(small_world_root, vocab_only_bert_dir, tmp_path, capsys):
    opts = ["DATASET.DATASET_PATH", os.path.join(small_world_root, "conceptual-captions"),
            "NETWORK.BERT_MODEL_NAME", vocab_only_bert_dir, *TINY]
    cfg = load_config(TOY_CFG, opts, add_task_defaults=ITM.add_defaults)
    torch.manual_seed(0)
    module = ITM.build_module(cfg).eval()
    ckpt = str(tmp_path / "tiny.model")
    torch.save({"state_dict": {f"module.{k}": v for k, v in module.state_dict().items()}}, ckpt)
    path, accuracy = itm_test.main(["--cfg", TOY_CFG, "--ckpt", ckpt, "--bs", "5", "--result-name", "tiny",
                                    "--result-path", str(tmp_path / "out"), *opts])
    assert path == str(tmp_path / "out" / "tiny_itm_val.json")
    with open(path) as f:
        records = json.load(f)
    dataset = ITM.build_dataset(cfg, "test")
    assert len(records) == len(dataset) == 2 * len(dataset.captions)
    metric = MatchAccuracy("MatchAcc")
    for index, record in enumerate(records):
        image, caption, label, _ = dataset.pair(index)
        assert record["caption"] == " ".join(dataset.captions[caption]) and record["label"] == label
        assert record["image"] == dataset.source.records[image]["image"]
        batch = collate_dicts([dataset[index]], dataset.PAD_RULES)
        with torch.no_grad():
            logit = module(batch)["match_logits"]
        assert record["score"] == pytest.approx(1 / (1 + math.exp(-float(logit[0]))), abs=1e-5)
        metric.update({"match_logits": logit}, batch)
    assert accuracy == pytest.approx(metric.compute())
    assert f"accuracy: {accuracy * 100:.2f}%" in capsys.readouterr().out
