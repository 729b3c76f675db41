"""Pretraining modules, losses and metrics on a tiny random VL-BERT (hidden 32, 2 layers, precomputed features)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from common.config import load_config
from common.model.pretrained import apply_prefix_changes
from pretrain.config import add_pretrain_defaults
from pretrain.losses import mlm_loss, mvrc_loss
from pretrain.metrics import MLMAccuracy, MVRCAccuracy, RelationshipAccuracy, build_pretrain_metrics
from pretrain.module import (
    ResNetVLBERTForAttentionVis,
    ResNetVLBERTForPretraining,
    ResNetVLBERTForPretrainingMultitask,
)

VQA_RULES = ["vlbert.mlm_head.predictions.transform->final_mlp.0",
             "module.vlbert.mlm_head.predictions.transform->module.final_mlp.0", "vlbert->vlbert",
             "module.vlbert->module.vlbert"]
VCR_RULES = ["vlbert.mvrc_head.transform->cnn_loss_reg.0", "module.vlbert.mvrc_head.transform->module.cnn_loss_reg.0",
             "module.vlbert->module.vlbert._module", "vlbert->vlbert._module"]


def _cfg(module="ResNetVLBERTForPretrainingMultitask", *extra):
    tiny = ["MODULE", module, "NETWORK.BERT_MODEL_NAME", "/nonexistent", "NETWORK.IMAGE_FINAL_DIM", "32",
            "NETWORK.VLBERT.hidden_size", "32", "NETWORK.VLBERT.visual_size", "32", "NETWORK.VLBERT.num_hidden_layers",
            "2", "NETWORK.VLBERT.num_attention_heads", "2", "NETWORK.VLBERT.intermediate_size", "64",
            "NETWORK.VLBERT.vocab_size", "50", "NETWORK.VLBERT.visual_region_classes", "7",
            # visual gates open, so the visual features matter from the start
            "NETWORK.VLBERT.visual_scale_text_init", "1.0", "NETWORK.VLBERT.visual_scale_object_init", "1.0", *extra]
    return load_config("cfgs/pretrain/toy_cpu.yaml", tiny, add_task_defaults=add_pretrain_defaults)


def _batch(gen: torch.Generator, rows=3, boxes=(4, 2, 5), lengths=(6, 4, 7), aux_lengths=(5, 8)) -> dict:
    n, t = max(boxes), max(lengths)
    box = torch.full((rows, n, 4), -2.0)
    ops = torch.zeros(rows, n, dtype=torch.long)
    labels = torch.zeros(rows, n, 7)
    for r, count in enumerate(boxes):
        box[r, :count] = torch.tensor([[0.0, 0.0, 63.0, 47.0]] + [[4.0 * k, 2.0, 20.0 + 4 * k, 30.0]
                                                                 for k in range(1, count)])
        ops[r, 1] = 1
        labels[r, 1] = torch.softmax(torch.randn(7, generator=gen), 0)
    text = torch.zeros(rows, t, dtype=torch.long)
    mlm = torch.full((rows, t), -1, dtype=torch.long)
    for r, length in enumerate(lengths):
        text[r, :length] = torch.randint(5, 50, (length,), generator=gen)
        mlm[r, 2] = int(text[r, 2])
    aux = torch.zeros(len(aux_lengths), max(aux_lengths), dtype=torch.long)
    aux_mlm = torch.full_like(aux, -1)
    for r, length in enumerate(aux_lengths):
        aux[r, :length] = torch.randint(5, 50, (length,), generator=gen)
        aux_mlm[r, 1] = int(aux[r, 1])
    return {"boxes": box, "box_features": torch.randn(rows, n, 2048, generator=gen).relu(),
            "im_info": torch.tensor([[64.0, 48.0, 1.0, 1.0]] * rows), "text": text, "mlm_labels": mlm,
            "mvrc_ops": ops, "mvrc_labels": labels, "relationship_label": torch.tensor([1, 0, 1][:rows]),
            "aux_text": aux, "aux_mlm_labels": aux_mlm}


def _module(cls=ResNetVLBERTForPretrainingMultitask, *extra):
    torch.manual_seed(0)
    return cls(_cfg(cls.__name__, *extra)).eval()


def test_losses_match_hand_computation():
    logits = torch.randn(2, 4, 6)
    labels = torch.tensor([[-1, 2, -1, 5], [-1, -1, 1, -1]])
    log_p = F.log_softmax(logits, -1)
    terms = [-log_p[0, 1, 2], -log_p[0, 3, 5], -log_p[1, 2, 1]]
    assert torch.allclose(mlm_loss(logits, labels), sum(terms) / 3)
    per_sample = ((terms[0] + terms[1]) / (2 + 1e-4) + terms[2] / (1 + 1e-4)) / (2 + 1e-4)
    assert torch.allclose(mlm_loss(logits, labels, norm_in_batch_first=True), per_sample)
    nothing = mlm_loss(logits.requires_grad_(), torch.full((2, 4), -1))
    assert nothing.item() == 0.0 and nothing.requires_grad

    region_logits = torch.randn(1, 3, 4)
    target = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.1, 0.2, 0.3, 0.35]]])
    expected = -(target[0, 1] * F.log_softmax(region_logits[0, 1], -1)).sum()  # row 2 sums to 0.95: kept too
    expected = (expected - (target[0, 2] * F.log_softmax(region_logits[0, 2], -1)).sum()) / 2
    assert torch.allclose(mvrc_loss(region_logits, target), expected)
    with pytest.raises(ValueError, match="visual_region_classes"):
        mvrc_loss(region_logits, torch.zeros(1, 3, 5))


def test_multitask_rows_equal_separate_runs():
    """Caption rows of the merged batch equal the caption-only module; text-only rows equal VL-BERT run on them
    alone with the aux visual vector and no object."""
    module = _module()
    batch = _batch(torch.Generator().manual_seed(1))
    with torch.no_grad():
        merged = module(batch)
        captions_only = ResNetVLBERTForPretraining.forward(module, batch)
        aux = batch["aux_text"]
        visual = module.aux_text_visual_embedding.weight[0].expand(*aux.shape, -1)
        objects = torch.zeros(aux.shape[0], 0, 64)
        _, alone, _ = module.vlbert(aux, torch.zeros_like(aux), visual, aux > 0, objects,
                                    torch.zeros(aux.shape[0], 0, dtype=torch.bool))
    width = batch["text"].shape[1]
    assert torch.allclose(merged["mlm_logits_wvc"][:, :width], captions_only["mlm_logits"], atol=1e-5)
    assert torch.allclose(merged["mvrc_logits"], captions_only["mvrc_logits"], atol=1e-5)
    assert torch.allclose(merged["mlm_logits_aux"][:, : aux.shape[1]], alone, atol=1e-5)
    assert torch.allclose(merged["loss"], merged["mlm_loss_wvc"] + merged["mlm_loss_aux"] + merged["mvrc_loss"])
    assert merged["mvrc_logits"].shape[-1] == 7


def test_hidden_regions_do_not_leak_their_features():
    module = _module()
    batch = _batch(torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = module(batch)["mvrc_logits"]
        hidden = dict(batch, box_features=batch["box_features"].clone())
        hidden["box_features"][:, 1] += 5.0  # box 1 has op 1 in every row
        visible = dict(batch, box_features=batch["box_features"].clone())
        visible["box_features"][0, 2] += 5.0  # op 0
        assert torch.allclose(module(hidden)["mvrc_logits"], reference, atol=1e-6)
        assert (module(visible)["mvrc_logits"] - reference).abs().max() > 1e-3


def test_checkpoint_keys_feed_the_fine_tuning_prefix_rules():
    keys = set(_module().state_dict())
    for key in ("vlbert.mlm_head.predictions.transform.dense.weight", "vlbert.mvrc_head.region_cls_pred.weight",
                "object_mask_word_embedding.weight", "object_mask_visual_embedding.weight",
                "aux_text_visual_embedding.weight", "object_linguistic_embeddings.weight",
                "vlbert.word_embeddings.weight"):
        assert key in keys
    saved = {"module." + k: torch.zeros(1) for k in keys}  # a DDP-wrapped checkpoint
    vqa = apply_prefix_changes(saved, VQA_RULES)
    assert "module.final_mlp.0.dense.weight" in vqa and "module.final_mlp.0.LayerNorm.weight" in vqa
    vcr = apply_prefix_changes(saved, VCR_RULES)
    assert "module.cnn_loss_reg.0.dense.weight" in vcr and "module.vlbert._module.word_embeddings.weight" in vcr


def test_attention_maps_cover_only_real_tokens():
    module = _module(ResNetVLBERTForAttentionVis, "NETWORK.WITH_MLM_LOSS", "false", "NETWORK.WITH_MVRC_LOSS", "false")
    assert not any(k.startswith("vlbert.mlm_head") for k in module.state_dict())
    batch = _batch(torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = module(batch)
    probs = out["attention_probs"]
    rows, length = 3, max(6 + 4, 4 + 2, 7 + 5) + 1  # text + objects + [END]
    assert probs.shape == (rows, 2, 2, length, length)
    assert out["hidden_states"].shape == (rows, 2, length, 32)
    assert torch.allclose(probs.sum(-1), torch.ones(rows, 2, 2, length), atol=1e-5)
    real = [6 + 4 + 1, 4 + 2 + 1]  # row 0 and row 1 are shorter than the longest row
    for r, count in enumerate(real):
        assert torch.all(probs[r, :, :, :, count:] == 0)


def test_metrics_hand_worked():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = logits[0, 1, 1] = logits[0, 2, 3] = 1.0
    acc = MLMAccuracy()
    acc.update({"mlm_logits": logits}, {"mlm_labels": torch.tensor([[2, -1, 0]])})
    assert acc.compute() == 0.5
    region = MVRCAccuracy()
    target = torch.tensor([[[0.1, 0.0, 0.2, 0.7], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    region.update({"mvrc_logits": logits}, {"mvrc_labels": target})
    assert region.compute() == 0.5  # row 0 wrong (2 vs 3), row 1 right, row 2 not a target
    rel = RelationshipAccuracy()
    rel.update({"relationship_logits": torch.tensor([[0.0, 1.0], [2.0, 0.0]])},
               {"relationship_label": torch.tensor([1, 1])})
    assert rel.compute() == 0.5
    names = [m.name for m in build_pretrain_metrics(_cfg())]
    assert names == ["MLMAccWVC", "MLMAccAUX", "MVRCAccuracy"]
    assert [m.name for m in build_pretrain_metrics(_cfg("ResNetVLBERTForPretraining"))][0] == "MLMAcc"


def test_norm_in_batch_first_changes_only_the_weighting():
    module = _module(ResNetVLBERTForPretrainingMultitask, "NETWORK.MLM_LOSS_NORM_IN_BATCH_FIRST", "true")
    batch = _batch(torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = module(batch)
    # one masked token per caption row: the per-sample mean equals the token mean (up to the 1e-4 guards)
    assert math.isclose(float(out["mlm_loss_wvc"]), float(mlm_loss(out["mlm_logits_wvc"], batch["mlm_labels"])),
                        rel_tol=1e-3)


def test_end_to_end_hidden_regions_use_the_learned_vector():
    """MASK_RAW_PIXELS false: a hidden region's representation depends on its box only, not on the pixels."""
    module = _module(ResNetVLBERTForPretrainingMultitask, "NETWORK.IMAGE_FEAT_PRECOMPUTED", "false",
                     "NETWORK.MASK_RAW_PIXELS", "false")
    assert module.object_mask_visual_embedding.weight.shape == (1, 512)  # ResNet-18 C5 width
    gen = torch.Generator().manual_seed(5)
    batch = _batch(gen, rows=1, boxes=(4,), lengths=(6,), aux_lengths=(5,))
    del batch["box_features"]
    outputs = []
    for _ in range(2):
        batch["image"] = torch.randn(1, 3, 48, 64, generator=gen) * 50
        with torch.no_grad():
            outputs.append(module.caption_inputs(batch)["object_vl"])
    assert torch.allclose(outputs[0][0, 1], outputs[1][0, 1])  # op 1: learned vector + geometry
    assert not torch.allclose(outputs[0][0, 2], outputs[1][0, 2])  # op 0: read from the image
