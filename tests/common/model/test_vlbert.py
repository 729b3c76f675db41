"""VL-BERT transformer: the packed layout against a hand-worked example, outputs scattered back, SDPA vs explicit
attention, heads and options."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from common.model.vlbert import VisualLinguisticBert, VisualLinguisticBertForPretraining, pack_layout

# Sample 0: Lt=3 (mask 1110), objects 0 and 2 real -> slots text 0-2, objects 3-4, [END] 5.
# Sample 1: Lt=2 (mask 1100), object 0 real      -> slots text 0-1, object 2, [END] 3, padding 4-5.
TEXT_MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
OBJECT_MASK = torch.tensor([[1, 0, 1], [1, 0, 0]], dtype=torch.bool)
TEXT_TYPES = torch.tensor([[0, 0, 1, 0], [0, 1, 0, 0]])


def make_inputs(cfg, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, cfg.vocab_size, (2, 4), generator=gen) * TEXT_MASK
    return dict(
        text_input_ids=ids,
        text_token_type_ids=TEXT_TYPES,
        text_visual_embeddings=torch.randn(2, 4, cfg.visual_size, generator=gen),
        text_mask=TEXT_MASK,
        object_vl_embeddings=torch.randn(2, 3, cfg.visual_size + cfg.hidden_size, generator=gen),
        object_mask=OBJECT_MASK,
    )


def test_pack_layout_hand_worked():
    layout = pack_layout(TEXT_MASK, OBJECT_MASK)
    assert layout.position_ids.tolist() == [[0, 1, 2, 3, 3, 4], [0, 1, 2, 3, 4, 5]]
    assert layout.attention_mask.long().tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]
    assert layout.is_text.long().tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]]
    assert layout.is_object.long().tolist() == [[0, 0, 0, 1, 1, 0], [0, 0, 1, 0, 0, 0]]
    assert layout.is_end.long().tolist() == [[0, 0, 0, 0, 0, 1], [0, 0, 0, 1, 0, 0]]
    assert layout.object_index[0, 3:5].tolist() == [0, 2] and layout.object_index[1, 2].item() == 0
    assert layout.object_slot[0, [0, 2]].tolist() == [3, 4] and layout.object_slot[1, 0].item() == 2


def test_embedding_matches_hand_built_sequence(tiny_vlbert_config):
    cfg = tiny_vlbert_config(visual_size=24)  # also exercises the visual_1x1 projections
    torch.manual_seed(0)
    model = VisualLinguisticBert(cfg).eval()
    with torch.no_grad():  # switch the visual gates on so the visual path is checked too
        model.visual_ln_text.weight.normal_()
        model.visual_ln_object.weight.normal_()
    inputs = make_inputs(cfg)
    embeddings, _ = model.embedding(**inputs)

    def visual(x, proj, ln):
        return F.layer_norm(x @ proj.weight.T + proj.bias, (32,), ln.weight, ln.bias, eps=1e-12)

    # (kind, index) per slot, positions and token types, written out by hand from the layout above
    slots = [[("t", 0), ("t", 1), ("t", 2), ("o", 0), ("o", 2), ("end", 0)],
             [("t", 0), ("t", 1), ("o", 0), ("end", 0), ("pad", 0), ("pad", 0)]]
    positions = [[0, 1, 2, 3, 3, 4], [0, 1, 2, 3, 4, 5]]
    types = [[0, 0, 1, 2, 2, 2], [0, 1, 2, 2, 0, 0]]
    with torch.no_grad():
        for b in range(2):
            for p, (kind, i) in enumerate(slots[b]):
                if kind == "t":
                    base = model.word_embeddings.weight[inputs["text_input_ids"][b, i]] + visual(
                        inputs["text_visual_embeddings"][b, i], model.visual_1x1_text, model.visual_ln_text)
                elif kind == "o":
                    vl = inputs["object_vl_embeddings"][b, i]
                    base = vl[24:] + visual(vl[:24], model.visual_1x1_object, model.visual_ln_object)
                elif kind == "end":
                    base = model.end_embedding.weight[0]
                else:
                    base = torch.zeros(32)
                total = base + model.position_embeddings.weight[positions[b][p]] + \
                    model.token_type_embeddings.weight[types[b][p]]
                expected = F.layer_norm(total, (32,), model.embedding_LayerNorm.weight,
                                        model.embedding_LayerNorm.bias, eps=1e-12)
                torch.testing.assert_close(embeddings[b, p], expected, atol=1e-5, rtol=1e-5)


def test_text_and_object_outputs_scattered_back(tiny_vlbert_config):
    cfg = tiny_vlbert_config()
    torch.manual_seed(1)
    model = VisualLinguisticBert(cfg).eval()
    inputs = make_inputs(cfg)
    with torch.no_grad():
        encoded, pooled = model(**inputs, output_all_encoded_layers=False)
        text, objects, pooled2 = model(**inputs, output_all_encoded_layers=False,
                                       output_text_and_object_separately=True)
    assert encoded.shape == (2, 6, 32) and text.shape == (2, 4, 32) and objects.shape == (2, 3, 32)
    torch.testing.assert_close(text, encoded[:, :4])
    torch.testing.assert_close(objects[0, 0], encoded[0, 3])
    torch.testing.assert_close(objects[0, 2], encoded[0, 4])
    torch.testing.assert_close(objects[1, 0], encoded[1, 2])
    assert objects[0, 1].abs().sum() == 0 and objects[1, 1:].abs().sum() == 0
    torch.testing.assert_close(pooled, torch.tanh(model.pooler.dense(encoded[:, 0])))
    torch.testing.assert_close(pooled, pooled2)


def test_sdpa_path_equals_explicit_softmax_path(tiny_vlbert_config):
    cfg = tiny_vlbert_config()
    torch.manual_seed(2)
    model = VisualLinguisticBert(cfg).eval()
    inputs = make_inputs(cfg)
    with torch.no_grad():
        fast, pooled_fast = model(**inputs)
        slow, pooled_slow, probs = model(**inputs, output_attention_probs=True)
    assert len(fast) == len(slow) == len(probs) == 2
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled_fast, pooled_slow, atol=1e-5, rtol=1e-5)
    for layer_probs in probs:
        assert layer_probs.shape == (2, 4, 6, 6)
        torch.testing.assert_close(layer_probs.sum(-1), torch.ones(2, 4, 6))
        assert layer_probs[1, :, :, 4:].abs().max() == 0  # padded keys of sample 1
        assert layer_probs[0].min() > 0


@pytest.mark.parametrize("separately", [False, True])
@pytest.mark.parametrize("with_probs", [False, True])
def test_outputs_are_named_tuples_in_the_original_order(tiny_vlbert_config, separately, with_probs):
    cfg = tiny_vlbert_config()
    torch.manual_seed(3)
    model = VisualLinguisticBert(cfg).eval()
    with torch.no_grad():
        out = model(**make_inputs(cfg), output_all_encoded_layers=False, output_attention_probs=with_probs,
                    output_text_and_object_separately=separately)
    names = ("text", "objects", "pooled") if separately else ("encoded", "pooled")
    names += ("attention_probs",) if with_probs else ()
    assert isinstance(out, tuple) and out._fields == names
    for i, name in enumerate(names):  # positional unpacking of the original and the names give the same tensors
        assert out[i] is getattr(out, name)
    assert out.pooled.shape == (2, 32)
    if separately:
        assert out.text.shape == (2, 4, 32) and out.objects.shape == (2, 3, 32)
    if with_probs:
        assert len(out.attention_probs) == 2 and out.attention_probs[0].shape == (2, 4, 6, 6)


def test_visual_scale_is_not_applied_in_place(tiny_vlbert_config):
    cfg = tiny_vlbert_config(visual_ln=False, visual_scale_text_init=0.5, visual_scale_object_init=0.25)
    model = VisualLinguisticBert(cfg).eval()
    assert "visual_scale_text" in model.state_dict() and "visual_ln_text.weight" not in model.state_dict()
    inputs = make_inputs(cfg)
    before = {k: v.clone() for k, v in inputs.items()}
    with torch.no_grad():
        model(**inputs)
    for key, value in inputs.items():
        assert torch.equal(value, before[key]), key
    assert model.visual_scale_text.item() == 0.5 and model.visual_scale_object.item() == 0.25


def test_pretraining_heads_shapes_and_tying(tiny_vlbert_config):
    cfg = tiny_vlbert_config()
    torch.manual_seed(3)
    model = VisualLinguisticBertForPretraining(cfg).eval()
    assert model.mlm_head.predictions.decoder.weight is model.word_embeddings.weight
    assert model.mlm_head.predictions.bias.abs().sum() == 0
    inputs = make_inputs(cfg)
    with torch.no_grad():
        rel, mlm, mvrc = model(**inputs)
        text, objects, pooled = VisualLinguisticBert.forward(
            model, **inputs, output_all_encoded_layers=False, output_text_and_object_separately=True)
    assert rel.shape == (2, 2) and mlm.shape == (2, 4, 50) and mvrc.shape == (2, 3, 7)
    head = model.mlm_head.predictions.transform
    hidden = F.layer_norm(F.gelu(head.dense(text)), (32,), head.LayerNorm.weight, head.LayerNorm.bias, eps=1e-12)
    torch.testing.assert_close(mlm, hidden @ model.word_embeddings.weight.T)
    only_mlm = VisualLinguisticBertForPretraining(cfg, with_rel_head=False, with_mvrc_head=False)
    assert only_mlm(**inputs).relationship_logits is None and only_mlm(**inputs).mvrc_logits is None


def test_word_embedding_frozen_uses_special_table(tiny_vlbert_config):
    cfg = tiny_vlbert_config(word_embedding_frozen=True)
    model = VisualLinguisticBert(cfg).eval()
    assert not model.word_embeddings.weight.requires_grad
    torch.testing.assert_close(model.special_word_embeddings.weight[:50], model.word_embeddings.weight)
    with torch.no_grad():
        model.special_word_embeddings.weight[7] += 1.0
    ids = torch.tensor([[7, 8]])
    torch.testing.assert_close(model._word_embed(ids)[0, 0], model.word_embeddings.weight[7] + 1.0)


def test_missing_config_key_is_named(tiny_vlbert_config):
    cfg = tiny_vlbert_config()
    del cfg["num_hidden_layers"]
    with pytest.raises(KeyError, match="NETWORK.VLBERT.num_hidden_layers"):
        VisualLinguisticBert(cfg)
