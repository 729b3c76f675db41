"""Activation checkpointing (NETWORK.GRADIENT_CHECKPOINTING): same gradients as the plain run, and the config wiring."""
from __future__ import annotations

import torch
from torch import Tensor

from common.config import load_config
from common.model.task_base import VLBertTaskModule
from common.model.vlbert import VisualLinguisticBert
from tests.common.model.test_vlbert import make_inputs
from vqa.config import add_vqa_defaults


def _grads(model: VisualLinguisticBert, inputs: dict, checkpointing: bool) -> tuple[Tensor, dict]:
    model.zero_grad(set_to_none=True)
    model.encoder.gradient_checkpointing = checkpointing
    encoded, pooled = model(**inputs, output_all_encoded_layers=True)
    loss = sum((layer ** 2).mean() for layer in encoded) + pooled.sum()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_checkpointed_gradients_equal_plain(tiny_vlbert_config):
    cfg = tiny_vlbert_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_hidden_layers=3)
    torch.manual_seed(0)
    model = VisualLinguisticBert(cfg).double().train()
    with torch.no_grad():  # open the visual gates so every input path carries gradient
        model.visual_ln_text.weight.normal_()
        model.visual_ln_object.weight.normal_()
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in make_inputs(cfg).items()}
    loss_plain, plain = _grads(model, inputs, checkpointing=False)
    loss_ckpt, ckpt = _grads(model, inputs, checkpointing=True)
    assert torch.allclose(loss_plain, loss_ckpt, atol=1e-12)
    assert plain.keys() == ckpt.keys() and any(n.startswith("encoder.layer.2.") for n in plain)
    for name in plain:
        assert torch.allclose(plain[name], ckpt[name], atol=1e-6, rtol=0), name


def test_checkpointing_only_wraps_layers_when_training(tiny_vlbert_config, monkeypatch):
    cfg = tiny_vlbert_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = VisualLinguisticBert(cfg)
    model.encoder.gradient_checkpointing = True
    calls = []
    import common.model.bert_encoder as bert_encoder

    real = bert_encoder.checkpoint
    monkeypatch.setattr(bert_encoder, "checkpoint", lambda *a, **k: calls.append(k) or real(*a, **k))
    inputs = make_inputs(cfg)
    model.train()(**inputs)
    assert len(calls) == 2 and all(k["use_reentrant"] is False for k in calls)
    model.eval()(**inputs)
    with torch.no_grad():
        model.train()(**inputs)
    assert len(calls) == 2


def test_config_key_reaches_encoder():
    flags = []
    for value in ("False", "True"):
        cfg = load_config("cfgs/vqa/toy_cpu.yaml", [
            "NETWORK.GRADIENT_CHECKPOINTING", value, "NETWORK.VLBERT.hidden_size", "32",
            "NETWORK.VLBERT.visual_size", "32", "NETWORK.IMAGE_FINAL_DIM", "32", "NETWORK.VLBERT.num_hidden_layers",
            "1", "NETWORK.VLBERT.num_attention_heads", "4", "NETWORK.VLBERT.intermediate_size", "64",
            "NETWORK.VLBERT.vocab_size", "50"], add_vqa_defaults)
        flags.append(VLBertTaskModule(cfg).vlbert.encoder.gradient_checkpointing)
    assert flags == [False, True]
