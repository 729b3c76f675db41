"""Retrieval learns on the toy world: fine-tuned from the toy pre-training checkpoint on the demo Flickr30K (400
training images, 2,000 captions), the two-stage retrieval of its 100 test images / 500 captions beats random
ranking by a wide margin at R@1 and R@5 both ways. Slow: the pre-training fixture (~10 CPU minutes) and six
epochs of fine-tuning at the toy config's size; the metrics are recorded as test properties."""
from __future__ import annotations

import glob
import math
import os

import pytest
from retrieval_fixtures import TOY_CFG

from common.engine.entry import train_main
from retrieval import test as test_script
from retrieval.task import RETRIEVAL


def random_recall(candidates: int, truths: int, k: int) -> float:
    """Percent of queries with a ground truth among k candidates drawn at random from `candidates`."""
    return 100.0 * (1.0 - math.comb(candidates - truths, k) / math.comb(candidates, k))


@pytest.mark.slow
def test_fine_tuned_retrieval_beats_random_ranking(toy_pretraining_checkpoint, demo_world_root, minilm_dir,
                                                   tmp_path_factory, record_property):
    out = str(tmp_path_factory.mktemp("retrieval_train"))
    data = ["DATASET.DATASET_PATH", os.path.join(demo_world_root, "flickr30k"), "NETWORK.BERT_MODEL_NAME", minilm_dir]
    train_main(RETRIEVAL, ["--cfg", TOY_CFG, "OUTPUT_PATH", out, "NETWORK.PARTIAL_PRETRAIN", toy_pretraining_checkpoint,
                           "TRAIN.END_EPOCH", "6", *data])
    best = glob.glob(os.path.join(out, "**", "vl-bert_toy_prec_retrieval-best.model"), recursive=True)
    assert len(best) == 1
    result = test_script.main(["--cfg", TOY_CFG, "--ckpt", best[0], "--k", "16", "--result-path", out, *data])
    metrics = result.metrics
    for key, value in metrics.items():
        record_property(f"retrieval_{key}", round(value, 2))
    images, texts = result.scores_t2i.shape[1], result.scores_t2i.shape[0]
    for k in (1, 5):
        chance_t2i, chance_i2t = random_recall(images, 1, k), random_recall(texts, texts // images, k)
        assert metrics[f"img_r{k}"] > 4 * chance_t2i + 5, (k, metrics, chance_t2i)
        assert metrics[f"txt_r{k}"] > 4 * chance_i2t + 5, (k, metrics, chance_i2t)
