"""Attention maps: dumped probabilities against a hand computation, the SDPA path, and the drawn pictures."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from common.config import get_default_config, merge_overrides
from common.data.tokenizer import BertTokenizer
from pretrain.config import add_pretrain_defaults
from viz.attention import (
    FALLBACK_NOTE,
    build_attention_model,
    fallback_boxes,
    prepare_sample,
    run_vlbert,
    visualise,
    vlbert_inputs,
)
from viz.render import draw_text_to_regions


@pytest.fixture(scope="module")
def tiny(minilm_dir):
    cfg = get_default_config(add_pretrain_defaults)
    merge_overrides(cfg, ["SCALES", "[48, 64]", "NETWORK.IMAGE_NUM_LAYERS", "18", "NETWORK.IMAGE_FINAL_DIM", "32",
                          "NETWORK.BERT_MODEL_NAME", minilm_dir, "NETWORK.VLBERT.hidden_size", "32",
                          "NETWORK.VLBERT.visual_size", "32", "NETWORK.VLBERT.num_hidden_layers", "2",
                          "NETWORK.VLBERT.num_attention_heads", "4", "NETWORK.VLBERT.intermediate_size", "64",
                          "NETWORK.PIXEL_MEANS", "[102.98, 115.95, 122.77]", "NETWORK.PIXEL_STDS", "[1.0, 1.0, 1.0]"])
    torch.manual_seed(0)
    return cfg, build_attention_model(cfg, load_bert=False), BertTokenizer.from_pretrained_dir(minilm_dir)


def _image() -> Image.Image:
    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[5:20, 5:30] = (220, 40, 40)
    return Image.fromarray(pixels)


def _batch(cfg, tokenizer, captions):
    """Two samples of different caption lengths, padded to a batch (text with 0, boxes with -2)."""
    items = [prepare_sample(cfg, tokenizer, _image(), c, fallback_boxes(64, 48)[:k])[0]
             for c, k in zip(captions, (4, 2), strict=True)]
    width = max(i["text"].shape[1] for i in items)
    boxes = max(i["boxes"].shape[1] for i in items)
    return {"image": torch.cat([i["image"] for i in items]), "im_info": torch.cat([i["im_info"] for i in items]),
            "text": torch.stack([torch.nn.functional.pad(i["text"][0], (0, width - i["text"].shape[1]))
                                 for i in items]),
            "boxes": torch.stack([torch.nn.functional.pad(i["boxes"][0], (0, 0, 0, boxes - i["boxes"].shape[1]),
                                                          value=-2.0) for i in items])}


def test_rows_sum_to_one_and_padding_gets_nothing(tiny):
    cfg, module, tokenizer = tiny
    batch = _batch(cfg, tokenizer, ["a long caption about a red square", "short"])
    _, probs = run_vlbert(module, vlbert_inputs(module, batch))
    # sample 1: [CLS] short [SEP] + [IMG] + 2 boxes + [END] = 7 real slots; the rest is padding
    real = 3 + 1 + 2 + 1
    assert probs.shape[-1] > real
    second = probs[1]
    torch.testing.assert_close(second[..., :real].sum(-1), torch.ones(second.shape[:-1]), atol=1e-5, rtol=0)
    assert float(second[..., real:].abs().max()) == 0.0
    torch.testing.assert_close(probs[0].sum(-1), torch.ones(probs[0].shape[:-1]), atol=1e-5, rtol=0)


def test_dump_matches_hand_softmax_and_sdpa_outputs(tiny):
    cfg, module, tokenizer = tiny
    batch = _batch(cfg, tokenizer, ["a red square", "a dark background"])
    inputs = vlbert_inputs(module, batch)
    encoded, probs = run_vlbert(module, inputs, with_probs=True)
    encoded_sdpa, _ = run_vlbert(module, inputs, with_probs=False)
    for a, b in zip(encoded, encoded_sdpa, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    with torch.no_grad():
        embedded, layout = module.vlbert.embedding(inputs["text_ids"], inputs["token_types"], inputs["text_visual"],
                                                   inputs["text_mask"], inputs["object_vl"], inputs["object_mask"])
        hidden_in = [embedded] + list(encoded[:-1])
        for k, layer in enumerate(module.vlbert.encoder.layer):
            attn = layer.attention.self
            b, length, h = hidden_in[k].shape
            q = attn.query(hidden_in[k]).view(b, length, attn.num_heads, -1).transpose(1, 2)
            key = attn.key(hidden_in[k]).view(b, length, attn.num_heads, -1).transpose(1, 2)
            scores = q @ key.transpose(-1, -2) / math.sqrt(q.shape[-1])
            scores = scores + (~layout.attention_mask[:, None, None, :]).float() * -1e9
            torch.testing.assert_close(probs[:, k], scores.softmax(-1), atol=1e-5, rtol=0)


def test_pictures_and_fallback(tiny, tmp_path, capsys):
    cfg, module, tokenizer = tiny
    image_path = tmp_path / "img.png"
    _image().save(image_path)
    paths = visualise(module, cfg, tokenizer, str(image_path), "a red square", str(tmp_path / "out"), layer=1, head=2)
    assert FALLBACK_NOTE in capsys.readouterr().out
    attention = np.load(paths["attention"])
    text = 1 + len(tokenizer.tokenize("a red square")) + 1
    assert attention.shape == (2, 4, text + 1 + 9 + 1, text + 1 + 9 + 1)
    for key in ("text_to_regions", "heatmap"):
        assert (tmp_path / "out" / f"{key}.png").stat().st_size > 3000


def test_most_attended_box_is_brightest(tmp_path):
    image = Image.new("RGB", (90, 90), (120, 120, 120))
    boxes = fallback_boxes(90, 90)
    weights = np.array([0.05, 0.1, 0.02, 0.3, 0.07, 0.01, 0.2, 0.15, 0.1], dtype=np.float32)
    path = draw_text_to_regions(image, boxes, weights, [f"box {k}" for k in range(1, 10)], str(tmp_path / "t.png"))
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    scale = pixels.shape[0] / 90
    redness = []
    for x1, y1, x2, y2 in boxes * scale:  # the middle of each box (away from outlines and labels)
        cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
        patch = pixels[cy - 5:cy + 5, cx - 5:cx + 5]
        redness.append(float((patch[..., 0] - patch[..., 2]).mean()))
    assert int(np.argmax(redness)) == int(np.argmax(weights)) == 3
    assert np.argsort(redness).tolist() == np.argsort(weights).tolist()


def test_val_dump_cuts_each_sample_to_its_length(tmp_path):
    """pretrain/vis_attention_maps.py writes {image_id}.npy cut to text + boxes + [END] of that sample."""
    from pretrain.vis_attention_maps import dump_attention

    probs = torch.rand(2, 3, 2, 9, 9)
    text_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]).bool()
    object_mask = torch.tensor([[1, 1, 1], [1, 0, 0]]).bool()

    def module(batch):
        return {"attention_probs": probs, "text_mask": text_mask, "object_mask": object_mask}

    loader = [{"image_id": torch.tensor([7, 42]), "index": torch.tensor([0, 1])}]
    assert dump_attention(module, loader, None, str(tmp_path), "cpu") == 2
    np.testing.assert_array_equal(np.load(tmp_path / "7.npy"), probs[0, :, :, :8, :8].numpy())
    np.testing.assert_array_equal(np.load(tmp_path / "42.npy"), probs[1, :, :, :4, :4].numpy())
