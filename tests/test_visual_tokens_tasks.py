"""Each task with each NETWORK.VISUAL_TOKENS mode its labels allow: VQA, ITM and pre-training (MVRC off) train on grid
cells and patch tokens, VQA and RefCOCO+ on timm RoI regions; VCR, RefCOCO+ and MVRC pre-training refuse grid and
patches naming the key. Tiny models on the small toy world (the toy configs' data, a few samples)."""
from __future__ import annotations

import os

import pytest
import torch

from common.config import load_config
from common.data.collate import collate_dicts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["NETWORK.VLBERT.hidden_size", "32", "NETWORK.VLBERT.visual_size", "32", "NETWORK.IMAGE_FINAL_DIM", "32",
        "NETWORK.VLBERT.num_hidden_layers", "2", "NETWORK.VLBERT.num_attention_heads", "2",
        "NETWORK.VLBERT.intermediate_size", "64", "NETWORK.VLBERT.hidden_dropout_prob", "0.0",
        "NETWORK.VLBERT.attention_probs_dropout_prob", "0.0", "SCALES", "[48, 80]", "NETWORK.IMAGE_PRETRAINED", ""]
VIT = ["NETWORK.BACKBONE", "vit_tiny_patch16_224", "NETWORK.BACKBONE_ARGS", "[embed_dim=32, depth=2, num_heads=2]"]
MODES = {
    "grid": ["NETWORK.VISUAL_TOKENS", "grid", "NETWORK.BACKBONE", "resnet18"],
    "patches": ["NETWORK.VISUAL_TOKENS", "patches", *VIT],
    "regions_vit": ["NETWORK.VISUAL_TOKENS", "regions", *VIT],
}


def task_cfg(task: str, yaml_name: str, data: list[str], *extra: str):
    module = __import__(f"{task}.config", fromlist=["x"])
    return load_config(os.path.join(REPO, "cfgs", task, yaml_name),
                       [*data, *TINY, "NETWORK.IMAGE_FEAT_PRECOMPUTED", "false", *extra],
                       add_task_defaults=getattr(module, f"add_{task}_defaults"))


def train_step(task_value, cfg, n: int = 3) -> tuple[torch.nn.Module, dict, dict]:
    torch.manual_seed(0)
    module = task_value.build_module(cfg).train()
    dataset = task_value.build_dataset(cfg, "train")
    batch = collate_dicts([dataset[i] for i in range(n)], dataset.PAD_RULES)
    out = module(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    projection = module.image_feature_extractor.obj_downsample[1].weight
    assert projection.grad is not None and projection.grad.abs().sum() > 0  # the visual tokens reach the loss
    return module, batch, out


def visual_token_count(module, batch) -> list[int]:
    with torch.no_grad():
        return module.encode_regions(batch).box_mask.sum(1).tolist()


def cells(batch, stride: int = 16) -> list[int]:
    """1 + the stride-16 cells inside each image (im_info = resized width, height)."""
    return [1 + -(-int(w) // stride) * -(-int(h) // stride) for w, h in batch["im_info"][:, :2].tolist()]


@pytest.fixture(scope="module")
def vqa_data(small_world_root, vocab_only_bert_dir) -> list[str]:
    coco = os.path.join(small_world_root, "coco")
    return ["DATASET.DATASET_PATH", coco, "DATASET.ANSWER_VOCAB_FILE", os.path.join(coco, "vqa", "answers_vqa.txt"),
            "NETWORK.BERT_MODEL_NAME", vocab_only_bert_dir]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_vqa_trains_in_each_mode(vqa_data, mode):
    from vqa.task import VQA

    module, batch, out = train_step(VQA, task_cfg("vqa", "toy_cpu.yaml", vqa_data, *MODES[mode]))
    assert out["label_logits"].shape == (3, 20)
    tokens = visual_token_count(module, batch)
    if mode == "regions_vit":
        assert tokens == (batch["boxes"][..., 0] > -1.5).sum(1).tolist()  # the detected boxes (+ the image box)
    else:
        assert tokens == cells(batch)


def test_itm_and_pretraining_train_on_patches(small_world_root, vocab_only_bert_dir):
    from itm.task import ITM
    from pretrain.module import ResNetVLBERTForPretraining
    from pretrain.task import TASK as PRETRAIN

    captions = os.path.join(small_world_root, "conceptual-captions")
    bert = ["NETWORK.BERT_MODEL_NAME", vocab_only_bert_dir]
    # the ITM module on images (its dataset reads precomputed features only: a hand-made batch of two images)
    cfg = task_cfg("itm", "toy_cpu.yaml", ["DATASET.DATASET_PATH", captions, *bert], *MODES["patches"])
    torch.manual_seed(0)
    module = ITM.build_module(cfg).train()
    batch = {"image": torch.randn(2, 3, 48, 80), "boxes": torch.tensor([[[0.0, 0.0, 79.0, 47.0]]] * 2),
             "im_info": torch.tensor([[80.0, 48.0, 1.0, 1.0], [50.0, 30.0, 1.0, 1.0]]),
             "text": torch.tensor([[101, 7, 8, 102], [101, 9, 102, 0]]), "label": torch.tensor([1.0, 0.0])}
    out = module(batch)
    out["loss"].backward()
    assert out["match_logits"].shape == (2,) and module.image_feature_extractor.obj_downsample[1].weight.grad.any()
    assert visual_token_count(module, batch) == [1 + 15, 1 + 8] == cells(batch)
    # MLM + relationship over the caption rows (the module of a captions-only DATASET; the toy yaml's first section)
    corpus = os.path.join(small_world_root, "en_corpus", "bc1g.doc")
    pretrain_data = ["DATASET.0.DATASET_PATH", captions, *bert, "NETWORK.WITH_REL_LOSS", "true",
                     "NETWORK.VLBERT.with_pooler", "true", *(x for split in ("TRAIN", "VAL", "TEST")
                                                              for x in (f"DATASET.1.{split}_ANNOTATION_FILE", corpus))]
    cfg = task_cfg("pretrain", "toy_cpu.yaml", pretrain_data, *MODES["patches"], "NETWORK.WITH_MVRC_LOSS", "false")
    torch.manual_seed(0)
    module = ResNetVLBERTForPretraining.from_config(cfg).train()
    dataset = PRETRAIN.build_dataset(cfg, "train")
    batch = collate_dicts([dataset[i] for i in range(2)], dataset.PAD_RULES)
    out = module(batch)
    assert {"relationship_loss", "mlm_loss"} <= set(out) and "mvrc_loss" not in out
    assert visual_token_count(module, batch) == cells(batch)
    with pytest.raises(ValueError, match="NETWORK.VISUAL_TOKENS 'patches' cannot serve this task: "
                                         "NETWORK.WITH_MVRC_LOSS true"):
        ResNetVLBERTForPretraining.from_config(task_cfg("pretrain", "toy_cpu.yaml", pretrain_data, *MODES["patches"]))


def test_refcoco_and_vcr_refuse_grid_and_patches_and_take_timm_regions(small_world_root, vocab_only_bert_dir):
    from refcoco.task import TASK as REFCOCO
    from vcr.task import TASK as VCR

    data = ["DATASET.DATASET_PATH", os.path.join(small_world_root, "coco"), "NETWORK.BERT_MODEL_NAME",
            vocab_only_bert_dir]
    for mode in ("grid", "patches"):
        with pytest.raises(ValueError, match=f"NETWORK.VISUAL_TOKENS '{mode}' cannot serve this task: RefCOCO"):
            REFCOCO.build_module(task_cfg("refcoco", "toy_cpu.yaml", data, *MODES[mode]))
        with pytest.raises(ValueError, match=f"NETWORK.VISUAL_TOKENS '{mode}' cannot serve this task: VCR"):
            VCR.build_module(task_cfg("vcr", "toy_q2a_cpu.yaml", ["NETWORK.BERT_MODEL_NAME", vocab_only_bert_dir],
                                      *MODES[mode]))
    module, batch, out = train_step(REFCOCO, task_cfg("refcoco", "toy_cpu.yaml", data, *MODES["regions_vit"],
                                                      "NETWORK.IMAGE_FROZEN_BACKBONE_STAGES", "[1]"))
    assert out["logits"].shape[0] == 3
    assert any(k.startswith("image_feature_extractor.backbone.trunk.blocks.1.") for k in module.state_dict())
