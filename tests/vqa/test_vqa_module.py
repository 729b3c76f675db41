"""ResNetVLBERTForVQA: input layout, outputs and loss against a hand computation, classifier init, and fine-tuning
from a checkpoint in the original VL-BERT pretraining format (keys under `module.`)."""
from __future__ import annotations

import os

import pytest
import torch
from vqa_fixtures import REPO, tiny_overrides

from common.data.collate import collate_dicts
from common.data.tokenizer import BertTokenizer
from common.engine.run import load_pretrained_weights
from vqa.module import question_text
from vqa.task import VQA, SoftAccuracy
from vqa.vqa_eval import score_count


def test_question_text_layout():
    question = torch.tensor([[5, 6, 0], [7, 0, 0]])
    ids, types, mask, mask_pos = question_text(question, cls_id=101, sep_id=102, mask_id=103)
    assert ids.tolist() == [[101, 5, 6, 102, 103, 102, 0], [101, 7, 102, 103, 102, 0, 0]]
    assert types.tolist() == [[0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 0, 0]]
    assert mask.tolist() == [[True] * 6 + [False], [True] * 5 + [False] * 2]
    assert mask_pos.tolist() == [4, 3]


def a_batch(cfg, n: int = 3, split: str = "train") -> dict:
    ds = VQA.build_dataset(cfg, split)
    return collate_dicts([ds[i] for i in range(n)], ds.PAD_RULES)


def test_outputs_and_loss(vqa_tiny_cfg):
    cfg = vqa_tiny_cfg()
    torch.manual_seed(0)
    module = VQA.build_module(cfg).eval()
    batch = a_batch(cfg)
    out = module(batch)
    assert out["label_logits"].shape == (3, 20)
    target, logits = batch["answer_scores"], out["label_logits"]
    by_hand = -(target * torch.log(torch.sigmoid(logits)) + (1 - target) * torch.log(1 - torch.sigmoid(logits)))
    assert torch.allclose(out["ans_loss"], by_hand.sum(1).mean(), rtol=1e-5)  # BCE mean x vocab = sum / B
    assert out["loss"] is out["ans_loss"]
    test_batch = a_batch(cfg, split="test")
    assert set(module(test_batch)) == {"label_logits"}
    # the answer is read at [MASK]: padding the question with extra zeros changes nothing
    padded = dict(batch, question=torch.nn.functional.pad(batch["question"], (0, 4)))
    assert torch.allclose(module(padded)["label_logits"], logits, atol=1e-5)


def test_soft_accuracy_metric(vqa_tiny_cfg):
    metric = SoftAccuracy("SoftAcc")
    scores = torch.tensor([[0.0, score_count(2), 1.0], [score_count(3), 0.0, 0.0]])
    logits = torch.tensor([[0.0, 5.0, 1.0], [0.0, 1.0, 2.0]])
    metric.update({"label_logits": logits}, {"answer_scores": scores})
    assert metric.compute() == pytest.approx((0.6 + 0.0) / 2)


@pytest.mark.parametrize("kind, shapes", [("1fc", [(20, 32)]), ("2fc", [(16, 32), (20, 16)])])
def test_other_classifiers(vqa_tiny_cfg, kind, shapes):
    cfg = vqa_tiny_cfg("NETWORK.CLASSIFIER_TYPE", kind, "NETWORK.CLASSIFIER_HIDDEN_SIZE", "16",
                       "NETWORK.CLASSIFIER_PRETRAINED", "false")
    module = VQA.build_module(cfg)
    linear = [m.weight.shape for m in module.final_mlp if isinstance(m, torch.nn.Linear)]
    assert linear == shapes
    assert module(a_batch(cfg))["label_logits"].shape == (3, 20)


def test_classifier_rows_are_mean_word_embeddings(vqa_tiny_cfg, vqa_vocab_only_dir):
    cfg = vqa_tiny_cfg()
    module = VQA.build_module(cfg)
    tok = BertTokenizer.from_pretrained_dir(vqa_vocab_only_dir)
    words = module.vlbert.word_embeddings.weight
    weight = module.final_mlp[-1].weight
    for row, answer in enumerate(module.answer_vocab):
        ids = tok.convert_tokens_to_ids(tok.tokenize(answer))
        assert torch.allclose(weight[row], words[ids].mean(0)), answer
    assert torch.count_nonzero(module.final_mlp[-1].bias) == 0


def original_pretrain_checkpoint(vqa_vocab_only_dir, vqa_toy_root, path: str) -> dict:
    """A tiny VL-BERT pretraining model saved as the original did: {"state_dict": {"module.<key>": ...}, ...}."""
    from common.config import load_config
    from pretrain.config import add_pretrain_defaults
    from pretrain.module import ResNetVLBERTForPretraining

    overrides = tiny_overrides(vqa_vocab_only_dir, vqa_toy_root)[4:]  # no VQA data keys
    cfg = load_config(os.path.join(REPO, "cfgs", "pretrain", "toy_cpu.yaml"), overrides,
                      add_task_defaults=add_pretrain_defaults)
    torch.manual_seed(123)
    model = ResNetVLBERTForPretraining(cfg)
    state = {"module." + k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "optimizer": {}, "validation_monitor": {"best_epoch": 0, "best_val": 0.0}},
               path)
    return state


def test_finetune_from_original_pretraining_checkpoint(vqa_tiny_cfg, vqa_vocab_only_dir, vqa_toy_root, tmp_path):
    path = str(tmp_path / "vl-bert-tiny-prec.model")
    ckpt = original_pretrain_checkpoint(vqa_vocab_only_dir, vqa_toy_root, path)
    assert any(k.startswith("module.vlbert.mlm_head.predictions.transform.") for k in ckpt)
    cfg = vqa_tiny_cfg("NETWORK.PARTIAL_PRETRAIN", path)
    torch.manual_seed(0)
    module = VQA.build_module(cfg)
    before = module.final_mlp[0].dense.weight.clone()
    load_pretrained_weights(VQA, module, cfg)
    # the prefix rule vlbert.mlm_head.predictions.transform -> final_mlp.0 (module. form) moved the MLM transform
    for name in ("dense.weight", "dense.bias", "LayerNorm.weight", "LayerNorm.bias"):
        assert torch.equal(module.final_mlp[0].state_dict()[name],
                           ckpt[f"module.vlbert.mlm_head.predictions.transform.{name}"])
    assert not torch.equal(before, module.final_mlp[0].dense.weight)
    own = module.state_dict()
    for key in ("vlbert.encoder.layer.1.output.dense.weight", "vlbert.word_embeddings.weight",
                "object_linguistic_embeddings.weight", "image_feature_extractor.obj_downsample.1.weight"):
        assert torch.equal(own[key], ckpt["module." + key]), key
    # CLASSIFIER_PRETRAINED ran after the load: answer rows from the checkpoint's word embeddings
    tok = BertTokenizer.from_pretrained_dir(vqa_vocab_only_dir)
    ids = tok.convert_tokens_to_ids(tok.tokenize(module.answer_vocab[5]))
    assert torch.allclose(module.final_mlp[-1].weight[5], ckpt["module.vlbert.word_embeddings.weight"][ids].mean(0))


def test_build_swaps_every_linear_unless_switched_off(vqa_tiny_cfg):
    """NETWORK.CPU_ONEDNN_LINEAR (default true) puts OneDnnLinear in place of every nn.Linear at build time; the
    keys, the weights and (up to float32 summation order) the outputs are those of the plain module."""
    from common.model.onednn_linear import OneDnnLinear, onednn_linear_available

    if not onednn_linear_available():
        pytest.skip("this torch build has no oneDNN linear kernel")
    torch.manual_seed(0)
    swapped = VQA.build_module(vqa_tiny_cfg()).eval()
    torch.manual_seed(0)
    plain = VQA.build_module(vqa_tiny_cfg("NETWORK.CPU_ONEDNN_LINEAR", "false")).eval()
    linears = [m for m in swapped.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) > 10 and all(type(m) is OneDnnLinear for m in linears)
    assert not any(isinstance(m, OneDnnLinear) for m in plain.modules())
    assert list(swapped.state_dict()) == list(plain.state_dict())
    for key, value in plain.state_dict().items():
        assert torch.equal(swapped.state_dict()[key], value), key
    batch = a_batch(vqa_tiny_cfg())
    torch.testing.assert_close(swapped(batch)["label_logits"], plain(batch)["label_logits"], atol=1e-5, rtol=1e-5)


class FeatureTokens(torch.nn.Module):
    """A front-end written for the seam alone: each precomputed box feature is one token, no box geometry."""

    feature_dim = 2048

    def __init__(self, cfg):
        super().__init__()
        self.proj = torch.nn.Linear(self.feature_dim, cfg.NETWORK.IMAGE_FINAL_DIM)

    def encode(self, batch, mask_embedding=None):
        from common.model.visual_frontend import VisualFeatures, trim_to_longest, valid_box_mask

        boxes, box_mask, features = trim_to_longest(batch["boxes"], valid_box_mask(batch["boxes"]),
                                                    batch["box_features"])
        return VisualFeatures(obj_reps=self.proj(features) * box_mask.unsqueeze(-1), box_mask=box_mask, boxes=boxes)

    def load_pretrained_from_config(self, cfg) -> None:
        pass


def test_a_new_front_end_is_one_class_and_one_registry_entry(vqa_tiny_cfg, monkeypatch):
    from common.model import front_ends
    from common.model.visual_frontend import VisualFrontEnd

    monkeypatch.setitem(front_ends.VISUAL_FRONT_ENDS, "feature_tokens", FeatureTokens)
    monkeypatch.setattr(front_ends, "front_end_name", lambda cfg: "feature_tokens")  # the key that selects it
    cfg = vqa_tiny_cfg()
    module = VQA.build_module(cfg)
    assert isinstance(module.image_feature_extractor, FeatureTokens)
    assert isinstance(module.image_feature_extractor, VisualFrontEnd)
    assert "image_feature_extractor.proj.weight" in module.state_dict()
    out = module(a_batch(cfg))
    out["loss"].backward()
    assert out["label_logits"].shape == (3, 20)
    assert module.image_feature_extractor.proj.weight.grad.abs().sum() > 0
