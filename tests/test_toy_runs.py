"""Toy runs: a rerun of a toy command continues (or finds the run finished) instead of overwriting its checkpoints,
and `make demo` scores the last epoch's checkpoint, which no val2014 score selected."""
from __future__ import annotations

import glob
import importlib.util
import os

import pytest
import yaml

from common.engine.entry import train_main
from itm.task import ITM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "cfgs", "*", "toy_*.yaml")))
TINY_ITM = ["NETWORK.VLBERT.hidden_size", "32", "NETWORK.VLBERT.visual_size", "32", "NETWORK.IMAGE_FINAL_DIM", "32",
            "NETWORK.VLBERT.num_hidden_layers", "1", "NETWORK.VLBERT.num_attention_heads", "2",
            "NETWORK.VLBERT.intermediate_size", "64", "TRAIN.END_EPOCH", "1", "TRAIN.BATCH_IMAGES", "20",
            "VAL.BATCH_IMAGES", "20"]


@pytest.mark.parametrize("path", TOY_CONFIGS, ids=os.path.basename)
def test_toy_configs_resume_automatically(path):
    with open(path) as f:
        assert yaml.safe_load(f)["TRAIN"]["AUTO_RESUME"] is True, path


def test_rerunning_a_toy_command_keeps_its_checkpoints(small_world_root, vocab_only_bert_dir, tmp_path):
    cfg = os.path.join(ROOT, "cfgs", "itm", "toy_cpu.yaml")
    args = ["--cfg", cfg, "OUTPUT_PATH", str(tmp_path), "DATASET.DATASET_PATH",
            os.path.join(small_world_root, "conceptual-captions"), "NETWORK.BERT_MODEL_NAME", vocab_only_bert_dir,
            *TINY_ITM]
    train_main(ITM, args)
    (checkpoint,) = glob.glob(os.path.join(str(tmp_path), "**", "*-0000.model"), recursive=True)
    before = (os.stat(checkpoint).st_mtime_ns, open(checkpoint, "rb").read())
    train_main(ITM, args)  # the same command again: the run is found finished, nothing is trained or written
    assert (os.stat(checkpoint).st_mtime_ns, open(checkpoint, "rb").read()) == before


def test_demo_scores_the_last_epoch_not_the_best(tmp_path):
    spec = importlib.util.spec_from_file_location("demo", os.path.join(ROOT, "scripts", "demo.py"))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    prefix = str(tmp_path / "vl-bert_toy_prec_vqa")
    for name in ("-0000.model", "-0005.model", "-0003.model", "-best.model", "-0004.model"):
        open(prefix + name, "w").close()
    assert demo.last_epoch_checkpoint(prefix) == prefix + "-0005.model"
    os.remove(prefix + "-0005.model")
    assert demo.last_epoch_checkpoint(prefix) == prefix + "-0004.model"
