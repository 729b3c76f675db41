"""Mid-epoch resume of multi-task pre-training (captions + text corpus through MultiTaskDataLoader, a persistent
worker, masks and flips drawn per item, dropout on): a run resumed from a step checkpoint taken after the auxiliary
corpus loader had already restarted inside the epoch ends bit for bit as the uninterrupted run."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from test_task_loader import toy_config

from common.data.loader import build_loader
from common.engine.checkpoint import load_checkpoint
from common.engine.dist import DistEnv
from common.engine.trainer import fit
from pretrain.task import TASK
from tests.checkpoint_tensors import checkpoint_tensors

RUN = "toy_cpu/train_train"
PREFIX = "vl-bert_toy_pretrain_multitask"


def toy_vocab(root: str, folder) -> int:
    """A BERT folder whose vocab.txt holds the special tokens and every word of the toy captions and corpus (a few
    hundred entries instead of 30522: the MLM logits, most of a step's time, shrink with it). Returns its size."""
    words: set[str] = set()
    for name in ("train.json", "val.json"):
        with open(os.path.join(root, "conceptual-captions", name), encoding="utf-8") as handle:
            words.update(w.lower() for line in handle for w in json.loads(line)["caption"])
    for name in ("bc1g.doc", "wiki.doc"):
        with open(os.path.join(root, "en_corpus", name), encoding="utf-8") as handle:
            words.update(w.lower() for line in handle for w in line.split())
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return len(tokens)


def tiny(bert_dir, vocab_size: int, out) -> list[str]:
    return ["OUTPUT_PATH", str(out), "NETWORK.BERT_MODEL_NAME", str(bert_dir), "NETWORK.VLBERT.vocab_size",
            str(vocab_size), "NETWORK.VLBERT.hidden_size", "32",
            "NETWORK.VLBERT.visual_size", "32", "NETWORK.IMAGE_FINAL_DIM", "32", "NETWORK.VLBERT.num_hidden_layers",
            "1", "NETWORK.VLBERT.num_attention_heads", "2", "NETWORK.VLBERT.intermediate_size", "64",
            "TRAIN.BATCH_IMAGES", "[4, 32]", "TRAIN.END_EPOCH", "2", "NUM_WORKERS_PER_GPU", "1", "VAL_FREQUENT", "0",
            "TRAIN.CHECKPOINT_EVERY_STEPS", "3", "TRAIN.KEEP_LAST", "0", "LOG_FREQUENT", "100"]



@pytest.mark.slow
def test_multitask_pretraining_resumed_mid_epoch_is_bitwise_identical(toy_root, minilm_dir, tmp_path):
    straight, resumed, bert = tmp_path / "straight", tmp_path / "resumed", tmp_path / "bert"
    vocab_size = toy_vocab(toy_root, bert)
    cfg = toy_config(toy_root, minilm_dir, *tiny(bert, vocab_size, straight))
    master, aux = build_loader(TASK, cfg, "train", DistEnv()).lengths
    assert (master, aux) == (10, 7)  # 40 captions / 4; the corpus by 32: the auxiliary loader restarts in epoch
    fit(TASK, cfg, DistEnv(), "toy_cpu")
    stop = straight / RUN / "steps" / f"{PREFIX}-e0001-s00000018.model"  # epoch 1 after batch 8: aux pass 2
    assert load_checkpoint(str(stop))["train_state"]["batches_done"] == 8
    (resumed / RUN / "steps").mkdir(parents=True)
    shutil.copy(stop, resumed / RUN / "steps")
    state = fit(TASK, toy_config(toy_root, minilm_dir, *tiny(bert, vocab_size, resumed)), DistEnv(), "toy_cpu")
    assert state.global_step == 20
    expected, got = (load_checkpoint(str(out / RUN / f"{PREFIX}-0001.model")) for out in (straight, resumed))
    assert got["train_state"] == expected["train_state"]
    expected_tensors, got_tensors = checkpoint_tensors(expected), checkpoint_tensors(got)
    assert got_tensors.keys() == expected_tensors.keys()
    different = [key for key, value in expected_tensors.items() if not torch.equal(got_tensors[key], value)]
    assert not different, f"{len(different)} of {len(expected_tensors)} tensors differ, e.g. {different[:5]}"
