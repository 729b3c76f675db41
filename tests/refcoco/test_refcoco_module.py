"""ResNetVLBERTForRefCOCO on toy batches: text layout, padding invariance, the BCE loss, predicted boxes mapped back
to original pixels, and final_mlp initialised from the MVRC transform by the config's prefix rule."""
from __future__ import annotations

import math
import os

import pytest
import torch

from common.config import load_config
from common.data.collate import collate_dicts
from common.model.pretrained import load_partial_pretrain
from refcoco.config import add_refcoco_defaults
from refcoco.module import PAD_LOGIT, boxes_to_original, expression_text
from refcoco.task import TASK

# C5 at stride 2 and a frozen ResNet keep it fast; visual gates at 1 so boxes differ from the first step
FAST = ["NETWORK.IMAGE_C5_DILATED", "false", "NETWORK.IMAGE_FROZEN_BACKBONE_STAGES", "[1, 2, 3, 4, 5]",
        "NETWORK.VLBERT.visual_scale_object_init", "1.0", "NETWORK.VLBERT.visual_scale_text_init", "1.0"]
ORIGINAL_CFG = os.path.join(os.path.dirname(__file__), "..", "..", "cfgs", "refcoco",
                            "base_detected_regions_4x16G.yaml")


def test_expression_text_layout():
    ids, mask = expression_text(torch.tensor([[7, 8, 9], [5, 0, 0]]), cls_id=101, sep_id=102)
    assert ids.tolist() == [[101, 7, 8, 9, 102], [101, 5, 102, 0, 0]]
    assert mask.tolist() == [[True] * 5, [True, True, True, False, False]]


def test_boxes_to_original_unscales_and_unflips():
    im_info = torch.tensor([[100.0, 50.0, 0.5, 0.25], [100.0, 50.0, 0.5, 0.25]])
    boxes = torch.tensor([[10.0, 5.0, 29.0, 9.0], [10.0, 5.0, 29.0, 9.0]])
    out = boxes_to_original(boxes, im_info, torch.tensor([False, True]))
    assert out[0].tolist() == [20.0, 20.0, 58.0, 36.0]
    # unflip in the resized image (x -> 99 - x, ends swapped): [70, 5, 89, 9], then unscale
    assert out[1].tolist() == [140.0, 20.0, 178.0, 36.0]


@pytest.fixture
def module_and_data(tiny_cfg):
    torch.manual_seed(0)
    cfg = tiny_cfg(*FAST)
    dataset = TASK.build_dataset(cfg, "val")
    module = TASK.build_module(cfg).eval()
    return module, dataset, cfg


def test_padding_does_not_change_logits_and_loss_is_bce(module_and_data):
    module, _, cfg = module_and_data
    dataset = TASK.build_dataset(cfg, "train")  # 12 images: pairs of equal size and unequal box count
    sizes = [dataset.refer.image_size(s.image_id) for s in dataset.samples]
    counts = [len(dataset.candidate_boxes(s.image_id)) for s in dataset.samples]
    # two samples of the same image size with different box counts, so padding is only in boxes and text
    pair = next((i, j) for i in range(len(dataset)) for j in range(len(dataset))
                if sizes[i] == sizes[j] and counts[i] < counts[j])
    items = [dataset[k] for k in pair]
    with torch.no_grad():
        together = module(collate_dicts(items, dataset.PAD_RULES))
        alone = [module(collate_dicts([item], dataset.PAD_RULES)) for item in items]
    short = len(items[0]["boxes"])
    assert torch.allclose(together["logits"][0, :short], alone[0]["logits"][0], atol=1e-4)
    assert (together["logits"][0, short:] == PAD_LOGIT).all()
    assert torch.allclose(together["logits"][1], alone[1]["logits"][0], atol=1e-4)
    assert together["logits"][1].std() > 1e-4  # the boxes are told apart
    # loss: mean binary cross-entropy over the real boxes, written out by hand
    terms = []  # zip stops at the real boxes of each row
    for row, item in enumerate(items):
        for logit, label in zip(together["logits"][row].tolist(), item["labels"].tolist(), strict=False):
            p = 1 / (1 + math.exp(-logit))
            terms.append(-(label * math.log(p) + (1 - label) * math.log(1 - p)))
    assert together["loss"].item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    assert together["cls_loss"] is together["loss"]


def test_prediction_is_the_top_box_in_original_pixels(module_and_data):
    module, dataset, _ = module_and_data
    batch = collate_dicts([dataset[i] for i in range(3)], dataset.PAD_RULES)
    with torch.no_grad():
        module.final_mlp[2].bias.zero_()
        out = module(batch)
    for row in range(3):
        best = int(out["logits"][row].argmax())
        scale = batch["im_info"][row, 2:].repeat(2)
        assert torch.allclose(out["pred_boxes"][row], batch["boxes"][row, best] / scale)


def test_final_mlp_loads_from_mvrc_transform(module_and_data, tmp_path):
    module, _, cfg = module_and_data
    hidden = cfg.NETWORK.VLBERT.hidden_size
    weight, bias = torch.randn(hidden, hidden), torch.randn(hidden)
    word = torch.randn_like(module.vlbert.word_embeddings.weight)
    path = str(tmp_path / "pretrained.model")
    torch.save({"state_dict": {"module.vlbert.mvrc_head.transform.dense.weight": weight,
                               "module.vlbert.mvrc_head.transform.dense.bias": bias,
                               "module.vlbert.word_embeddings.weight": word}}, path)
    rules = load_config(ORIGINAL_CFG, add_task_defaults=add_refcoco_defaults).NETWORK.PARTIAL_PRETRAIN_PREFIX_CHANGES
    load_partial_pretrain(module, path, rules)
    assert torch.equal(module.final_mlp[0].dense.weight, weight)
    assert torch.equal(module.final_mlp[0].dense.bias, bias)
    assert torch.equal(module.vlbert.word_embeddings.weight, word)
