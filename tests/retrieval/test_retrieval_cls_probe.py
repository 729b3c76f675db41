"""bench/retrieval_cls_probe.py: the states it reads are the ones the dual encoder projects, and its probe tells a
large component common to every state (which hides what tells items apart from a raw linear map) from its absence."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.retrieval_cls_probe import cls_states, probe_recall
from common.data.collate import collate_dicts
from retrieval.dataset import PAD_RULES, TextItems
from retrieval.task import RETRIEVAL


def synthetic(images: int, seed: int, common: torch.Tensor, mix: torch.Tensor) -> tuple:
    """Three captions per image; image i's state = common + 0.02 z_i, a caption's = common + 0.02 (z_i mix + noise)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(images, mix.shape[0], generator=g)
    owner = torch.arange(images).repeat_interleave(3)
    text = common + 0.02 * (z[owner] @ mix + 0.1 * torch.randn(len(owner), mix.shape[1], generator=g))
    return text, common + 0.02 * z, owner


def test_the_probe_sees_through_a_common_component_only_when_centred():
    g = torch.Generator().manual_seed(0)
    common, mix = 40.0 * torch.randn(32, generator=g), torch.randn(32, 32, generator=g)
    train, val = synthetic(120, 1, common, mix), synthetic(30, 2, common, mix)
    raw = probe_recall(train, val, centre=False, steps=300)
    centred = probe_recall(train, val, centre=True, steps=300)
    assert centred["img_r1"] > 80 and centred["txt_r1"] > 80, centred
    assert raw["img_r1"] < centred["img_r1"] - 30, (raw, centred)


def test_the_states_are_the_inputs_of_the_dual_encoders_norms(retrieval_tiny_cfg):
    cfg = retrieval_tiny_cfg()
    torch.manual_seed(0)
    module = RETRIEVAL.build_module(cfg).eval()
    module.itc_text_norm.running_mean.normal_()
    module.itc_image_norm.running_mean.normal_()
    text, image, owner = cls_states(module, cfg, "test", batch_size=4)
    dataset = RETRIEVAL.build_dataset(cfg, "test")
    assert owner.tolist() == dataset.split.text_image
    assert text.shape == (len(owner), cfg.NETWORK.VLBERT.hidden_size) and len(image) == owner.max() + 1
    with torch.no_grad():
        items = TextItems(dataset.split)
        ids = collate_dicts([items[i] for i in range(5)], PAD_RULES)["text"]
        embedded = module({"text": ids})["text_embedding"]
        rebuilt = F.normalize(module.itc_text_proj(module.itc_text_norm(text[:5])), dim=-1)
    torch.testing.assert_close(embedded, rebuilt, rtol=1e-4, atol=1e-5)
