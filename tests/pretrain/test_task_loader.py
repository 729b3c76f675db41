"""The pretraining loader hook over the engine's make_loader, on the toy world with one persistent worker:
batches merge captions and corpus, and the epoch reaches the worker's mask seeds."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from common.config import load_config
from common.data.loader import build_loader
from pretrain.config import add_pretrain_defaults
from pretrain.task import TASK, check_pretrain_config


def toy_config(toy_root: str, minilm_dir: str, *extra: str):
    corpus = os.path.join(toy_root, "en_corpus")
    overrides = ["NETWORK.BERT_MODEL_NAME", minilm_dir,
                 "DATASET.0.DATASET_PATH", os.path.join(toy_root, "conceptual-captions"),
                 "DATASET.1.TRAIN_ANNOTATION_FILE", f"{corpus}/bc1g.doc+{corpus}/wiki.doc",
                 "DATASET.1.VAL_ANNOTATION_FILE", f"{corpus}/bc1g.doc", *extra]
    return load_config("cfgs/pretrain/toy_cpu.yaml", overrides, add_task_defaults=add_pretrain_defaults)


def _first_batch(loader, epoch: int) -> dict:
    loader.set_epoch(epoch)
    return next(iter(loader))


def test_loader_merges_captions_and_corpus_and_follows_the_epoch(toy_root, minilm_dir):
    cfg = toy_config(toy_root, minilm_dir, "NUM_WORKERS_PER_GPU", "1", "TRAIN.SHUFFLE", "false",
                     "TRAIN.BATCH_IMAGES", "[4, 3]")
    loader = build_loader(TASK, cfg, "train", SimpleNamespace(world_size=1, rank=0))
    assert len(loader) == 10  # 40 toy captions / 4
    first = _first_batch(loader, 0)
    assert first["text"].shape[0] == 4 and first["aux_text"].shape[0] == 3
    assert first["box_features"].shape[-1] == 2048 and first["mvrc_labels"].shape[-1] == 1601
    assert first["index"].tolist() == [0, 1, 2, 3]
    assert torch.all(first["aux_mlm_labels"][first["aux_text"] == 0] == -1)  # padding never labelled
    again = _first_batch(loader, 0)
    later = _first_batch(loader, 1)
    assert torch.equal(first["mlm_labels"], again["mlm_labels"])
    assert torch.equal(first["index"], later["index"])  # same samples (no shuffle) ...
    assert not torch.equal(first["mlm_labels"], later["mlm_labels"])  # ... masked afresh in the worker


def test_module_and_dataset_list_must_agree(toy_root, minilm_dir):
    check_pretrain_config(toy_config(toy_root, minilm_dir))
    with pytest.raises(ValueError, match="ResNetVLBERTForPretraining reads image captions only"):
        check_pretrain_config(toy_config(toy_root, minilm_dir, "MODULE", "ResNetVLBERTForPretraining"))


@pytest.mark.parametrize("name", ["base_e2e_16x16G_fp16", "base_prec_4x16G_fp32",
                                  "base_prec_withouttextonly_4x16G_fp32", "large_e2e_16x16G_fp16",
                                  "large_prec_4x16G_fp16", "vis_attention_maps_coco"])
def test_original_configs_fit_the_task(name):
    cfg = load_config(f"cfgs/pretrain/{name}.yaml", add_task_defaults=add_pretrain_defaults)
    check_pretrain_config(cfg)
    assert cfg.MODULE in TASK.modules
