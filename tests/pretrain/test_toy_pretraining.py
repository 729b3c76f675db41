"""Toy pretraining end to end (slow, ~30 CPU minutes): on the demo-size toy world, val MLM loss falls and MLM / MVRC
accuracy rise compared with the evaluation of the same initial weights before training; toy VQA fine-tuned from the
checkpoint then does at least as well as toy VQA fine-tuned from BERT alone in the same steps."""
from __future__ import annotations

import logging
import os

import pytest
import torch
from test_task_loader import toy_config

from common.config import load_config
from common.data.loader import build_loader
from common.engine.amp import MixedPrecision
from common.engine.dist import DistEnv
from common.engine.evaluate import load_module_for_inference
from common.engine.run import build_metrics, load_pretrained_weights, seed_everything
from common.engine.trainer import evaluate, fit
from common.model.state_dict_io import read_checkpoint_file
from pretrain.task import TASK

log = logging.getLogger(__name__)
VQA_TOY_CONFIG = "cfgs/vqa/toy_cpu.yaml"


@pytest.fixture(scope="module")
def pretrained(toy_pretraining_checkpoint, demo_world_root, minilm_dir):
    """(checkpoint path, val metrics of the initial weights, val metrics of the checkpoint) on the demo world."""
    cfg = toy_config(demo_world_root, minilm_dir)
    env = DistEnv()
    amp = MixedPrecision.from_config(cfg, env.device)
    val_loader = build_loader(TASK, cfg, "val", env)
    seed_everything(int(cfg.RNG_SEED))  # the initial weights fit() starts from
    before = evaluate(TASK.build_module(cfg), val_loader, build_metrics(TASK, cfg), amp, env.device)
    after = evaluate(load_module_for_inference(TASK, cfg, toy_pretraining_checkpoint), val_loader,
                     build_metrics(TASK, cfg), amp, env.device)
    log.info("toy pretraining val before %s after %s", before, after)
    return toy_pretraining_checkpoint, before, after


@pytest.mark.slow
def test_toy_pretraining_improves_val_mlm_and_mvrc(pretrained, record_property):
    _, before, after = pretrained
    for key in ("MLMLossWVC", "MLMAccWVC", "MLMAccAUX", "MVRCAccuracy", "MVRCLoss"):
        record_property(key, f"{before[key]:.4f} -> {after[key]:.4f}")
    assert after["MLMLossWVC"] < before["MLMLossWVC"]
    assert after["MLMLossAUX"] < before["MLMLossAUX"]
    assert after["MLMAccWVC"] > before["MLMAccWVC"]
    assert after["MVRCAccuracy"] > before["MVRCAccuracy"]


@pytest.mark.slow
def test_toy_vqa_from_pretraining_vs_from_bert(pretrained, demo_world_root, minilm_dir, tmp_path, record_property):
    """Both fine-tuning runs take the same steps (the toy VQA config as `make demo` runs it); the pretrained one must
    load every VL-BERT tensor it names and reach at least the best val SoftAcc of the run from BERT."""
    if not os.path.isfile(VQA_TOY_CONFIG):
        pytest.skip(f"{VQA_TOY_CONFIG} is not available")
    vqa_task = pytest.importorskip("vqa.task").TASK
    checkpoint = pretrained[0]
    scores = {}
    for name, partial in (("from_bert", ""), ("from_pretraining", checkpoint)):
        coco = os.path.join(demo_world_root, "coco")
        cfg = load_config(VQA_TOY_CONFIG, [
            "OUTPUT_PATH", str(tmp_path / name), "NETWORK.BERT_MODEL_NAME", minilm_dir, "NETWORK.PARTIAL_PRETRAIN",
            partial, "DATASET.DATASET_PATH", coco, "DATASET.ROOT_PATH", str(tmp_path / name),
            "DATASET.ANSWER_VOCAB_FILE", os.path.join(coco, "vqa", "answers_vqa.txt")],
            add_task_defaults=vqa_task.add_defaults)
        if partial:  # the toy VQA config's prefix rules must carry every transformer tensor over
            module = vqa_task.build_module(cfg)
            load_pretrained_weights(vqa_task, module, cfg)
            saved = read_checkpoint_file(checkpoint)["state_dict"]
            own = module.state_dict()
            encoder = [k for k in saved if k.startswith("vlbert.encoder.")]
            assert encoder and all(torch.equal(own[k], saved[k]) for k in encoder)
        state = fit(vqa_task, cfg, DistEnv(), "toy_cpu")
        scores[name] = state.best_val
    record_property("vqa_from_bert", scores["from_bert"])
    record_property("vqa_from_pretraining", scores["from_pretraining"])
    log.info("toy VQA after the same steps: from BERT %.4f, from toy pretraining %.4f", scores["from_bert"],
             scores["from_pretraining"])
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert scores["from_pretraining"] >= scores["from_bert"], scores
