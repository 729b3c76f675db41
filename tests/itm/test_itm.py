"""Image-text matching: balanced pairs with true negatives, BCE on a hand-made batch, and training through the
engine's entry point (checkpoint layout; slow: beats chance on the toy validation pairs)."""
from __future__ import annotations

import glob
import math
import os

import pytest
import torch

from common.config import load_config
from common.data.captions import folder_path
from itm.config import add_itm_defaults
from itm.task import ITM, MatchAccuracy, build_itm_dataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY_CFG = os.path.join(REPO, "cfgs", "itm", "toy_cpu.yaml")
TINY = ["NETWORK.VLBERT.hidden_size", "32", "NETWORK.VLBERT.visual_size", "32", "NETWORK.IMAGE_FINAL_DIM", "32",
        "NETWORK.VLBERT.num_hidden_layers", "2", "NETWORK.VLBERT.num_attention_heads", "2",
        "NETWORK.VLBERT.intermediate_size", "64", "NETWORK.VLBERT.hidden_dropout_prob", "0.0",
        "NETWORK.VLBERT.attention_probs_dropout_prob", "0.0", "NETWORK.CLASSIFIER_DROPOUT", "0.0"]


@pytest.fixture(scope="module")
def toy_root(small_world_root) -> str:
    return small_world_root


@pytest.fixture(scope="module")
def vocab_only_dir(vocab_only_bert_dir) -> str:
    return vocab_only_bert_dir


@pytest.fixture(scope="module")
def tiny_opts(toy_root, vocab_only_dir) -> list[str]:
    return ["DATASET.DATASET_PATH", os.path.join(toy_root, "conceptual-captions"),
            "NETWORK.BERT_MODEL_NAME", vocab_only_dir, *TINY]


def test_val_pairs_are_balanced_and_negatives_differ(tiny_opts):
    cfg = load_config(TOY_CFG, tiny_opts, add_task_defaults=add_itm_defaults)
    val = build_itm_dataset(cfg, "val")
    assert len(val) == 2 * len(val.captions)
    labels = [val.pair(i)[2] for i in range(len(val))]
    assert labels == [1, 0] * len(val.captions)
    for i in range(len(val)):
        image, caption, label, _ = val.pair(i)
        assert (caption == image) == (label == 1)
        if label == 0:
            assert val.captions[caption] != val.captions[image]
    assert [val.pair(i)[1] for i in range(len(val))] == [val.pair(i)[1] for i in range(len(val))]
    item = val[1]
    own = val.text_ids(val.captions[item["index"] // 2])
    assert item["text"].tolist() != own and float(item["label"]) == 0.0
    assert val[0]["text"].tolist() == own and float(val[0]["label"]) == 1.0
    assert item["boxes"].shape[0] == item["box_features"].shape[0]


def test_train_pairs_depend_on_epoch_and_are_balanced(tiny_opts):
    cfg = load_config(TOY_CFG, tiny_opts, add_task_defaults=add_itm_defaults)
    train = build_itm_dataset(cfg, "train")
    labels, per_epoch = [], []
    for epoch in range(5):
        train.set_epoch(epoch)
        pairs = [train.pair(i)[:3] for i in range(len(train))]
        assert pairs == [train.pair(i)[:3] for i in range(len(train))]  # deterministic given (seed, epoch, index)
        per_epoch.append(pairs)
        labels += [label for _, _, label in pairs]
        for image, caption, label in pairs:
            assert (image == caption) == (label == 1)
            assert label == 1 or train.captions[caption] != train.captions[image]
    assert per_epoch[0] != per_epoch[1]
    assert 0.4 < sum(labels) / len(labels) < 0.6, sum(labels) / len(labels)


def test_loss_is_bce_on_hand_made_batch(tiny_opts):
    cfg = load_config(TOY_CFG, tiny_opts, add_task_defaults=add_itm_defaults)
    torch.manual_seed(0)
    module = ITM.build_module(cfg).eval()
    feature_dim = 2048
    batch = {
        "text": torch.tensor([[101, 1037, 2417, 3608, 102], [101, 1037, 102, 0, 0]]),
        "boxes": torch.tensor([[[0.0, 0.0, 99.0, 79.0], [10.0, 10.0, 40.0, 30.0]],
                               [[0.0, 0.0, 99.0, 79.0], [-2.0, -2.0, -2.0, -2.0]]]),
        "box_features": torch.randn(2, 2, feature_dim),
        "im_info": torch.tensor([[100.0, 80.0, 1.0, 1.0], [100.0, 80.0, 1.0, 1.0]]),
        "label": torch.tensor([1.0, 0.0]),
    }
    with torch.no_grad():
        module.final_mlp[1].bias.fill_(0.3)
        out = module(batch)
    z = out["match_logits"].tolist()
    sigmoid = [1 / (1 + math.exp(-v)) for v in z]
    expected = -(math.log(sigmoid[0]) + math.log(1 - sigmoid[1])) / 2
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out["itm_loss"].item() == out["loss"].item()
    metric = MatchAccuracy("MatchAcc")
    metric.update(out, batch)
    assert metric.compute() == ((z[0] > 0) + (z[1] <= 0)) / 2


def test_short_training_writes_original_checkpoint_layout(tiny_opts, tmp_path):
    from common.engine.entry import train_main
    from common.model.state_dict_io import read_checkpoint_file

    out = str(tmp_path / "out")
    train_main(ITM, ["--cfg", TOY_CFG, "OUTPUT_PATH", out, *tiny_opts, "TRAIN.END_EPOCH", "1",
                     "TRAIN.BATCH_IMAGES", "20", "VAL.BATCH_IMAGES", "20"])
    cfg = load_config(TOY_CFG, tiny_opts, add_task_defaults=add_itm_defaults)
    path = os.path.join(out, "toy_cpu", "train_train", f"{cfg.MODEL_PREFIX}-0000.model")
    assert os.path.isfile(path), sorted(glob.glob(os.path.join(out, "**"), recursive=True))
    saved = read_checkpoint_file(path)["state_dict"]
    assert {"final_mlp.1.weight", "final_mlp.1.bias"} <= set(saved)
    assert any(k.startswith("vlbert.encoder.") for k in saved)
    assert saved["final_mlp.1.weight"].shape == (1, 32)


@pytest.mark.slow
def test_training_from_toy_pretraining_beats_chance_on_toy_val(toy_pretraining_checkpoint, demo_world_root,
                                                                 minilm_dir, tmp_path_factory, record_property):
    """Matching needs words bound to regions: from BERT alone 5 toy epochs stay at chance (val 0.50); from the toy
    pre-training checkpoint (MLM with visual clues) the same run reached 0.825."""
    from common.engine.entry import train_main

    out = str(tmp_path_factory.mktemp("itm_train"))
    state = train_main(ITM, ["--cfg", TOY_CFG, "OUTPUT_PATH", out, "NETWORK.BERT_MODEL_NAME", minilm_dir,
                             "NETWORK.PARTIAL_PRETRAIN", toy_pretraining_checkpoint,
                             "DATASET.DATASET_PATH", os.path.join(demo_world_root, "conceptual-captions"),
                             "TRAIN.END_EPOCH", "5"])
    record_property("itm_val_match_acc", state.best_val)
    print("image-text matching toy val MatchAcc:", state.best_val)
    assert state.best_val > 0.65


def test_describe_names_the_pair(tiny_opts):
    """What the non-finite guard says of an item: the image's record and box file, and the caption's record."""
    cfg = load_config(TOY_CFG, tiny_opts, add_task_defaults=add_itm_defaults)
    val = build_itm_dataset(cfg, "val")
    root = cfg.DATASET.DATASET_PATH
    first = val.source.records[0]
    box_file = os.path.join(root, folder_path(first["frcnn"]))
    assert val.describe(0) == (f"pair 0: {os.path.join(root, 'val_frcnn.json')} record 1 (box file {box_file}) "
                               f"with the caption of record 1 (label 1)")
    assert os.path.isfile(box_file)
    negative = val.pair(1)[1]
    assert val.describe(1).endswith(f"with the caption of record {negative + 1} (label 0)")
