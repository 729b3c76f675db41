"""Weight loading: real MiniLM BERT weights vs transformers' BertModel, both BERT layouts, the original key set,
and NETWORK.PARTIAL_PRETRAIN with its prefix rules.
"""
from __future__ import annotations

import json
import logging
import os

import pytest
import torch
from easydict import EasyDict
from safetensors.torch import load_file
from torch import nn

from common.model.pretrained import (
    apply_prefix_changes,
    load_bert_into_vlbert,
    load_partial_pretrain,
    resolve_bert_path,
    strip_module_prefix,
)
from common.model.state_dict_io import CheckpointError
from common.model.vlbert import VisualLinguisticBert, VisualLinguisticBertForPretraining


def minilm_vlbert_config(minilm_dir: str, make_config) -> EasyDict:
    with open(os.path.join(minilm_dir, "config.json")) as handle:
        bert = json.load(handle)
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
            "max_position_embeddings", "initializer_range")
    return make_config(**{k: bert[k] for k in keys}, visual_size=bert["hidden_size"], hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0)


def reference_inputs_embeds(model, hf, inputs):
    """Per sample, by hand: the packed sequence as BertModel inputs (inputs_embeds, position ids, types, mask).

    BertModel adds position and token-type rows itself; VL-BERT's type 2 (objects, [END]) is not in BERT's
    2-row table, so those slots use type 0 and carry (row2 - row0) in inputs_embeds. The visual LayerNorm
    gate is applied here with F.layer_norm. Everything else is BertModel's own computation.
    """
    hf_type = hf.embeddings.token_type_embeddings.weight
    type_fix = model.token_type_embeddings.weight[2] - hf_type[0]
    h = model.hidden_size
    ln_t, ln_o = model.visual_ln_text, model.visual_ln_object
    rows = []
    for b in range(inputs["text_mask"].shape[0]):
        lt = int(inputs["text_mask"][b].sum())
        seq, pos, typ = [], [], []
        for i in range(lt):
            visual = torch.nn.functional.layer_norm(inputs["text_visual_embeddings"][b, i], (h,), ln_t.weight,
                                                    ln_t.bias, eps=1e-12)
            seq.append(hf.embeddings.word_embeddings.weight[inputs["text_input_ids"][b, i]] + visual)
            pos.append(i)
            typ.append(int(inputs["text_token_type_ids"][b, i]))
        for o in torch.nonzero(inputs["object_mask"][b]).flatten().tolist():
            vl = inputs["object_vl_embeddings"][b, o]
            visual = torch.nn.functional.layer_norm(vl[:h], (h,), ln_o.weight, ln_o.bias, eps=1e-12)
            seq.append(vl[h:] + visual + type_fix)
            pos.append(lt)
            typ.append(0)
        seq.append(model.end_embedding.weight[0] + type_fix)
        pos.append(lt + 1)
        typ.append(0)
        rows.append((seq, pos, typ))
    length = max(len(seq) for seq, _, _ in rows)
    embeds = torch.zeros(len(rows), length, h)
    position_ids = torch.zeros(len(rows), length, dtype=torch.long)
    type_ids = torch.zeros_like(position_ids)
    mask = torch.zeros_like(position_ids)
    for b, (seq, pos, typ) in enumerate(rows):
        embeds[b, : len(seq)] = torch.stack(seq)
        position_ids[b, : len(seq)] = torch.tensor(pos)
        type_ids[b, : len(seq)] = torch.tensor(typ)
        mask[b, : len(seq)] = 1
    return embeds, position_ids, type_ids, mask


@pytest.fixture(scope="module")
def minilm_model(minilm_dir, tiny_vlbert_config):
    torch.manual_seed(0)
    model = VisualLinguisticBert(minilm_vlbert_config(minilm_dir, tiny_vlbert_config)).eval()
    load_bert_into_vlbert(model, minilm_dir)
    with torch.no_grad():  # open the visual gates so the comparison covers them
        model.visual_ln_text.weight.normal_(0.0, 0.5)
        model.visual_ln_object.weight.normal_(0.0, 0.5)
    return model


@pytest.mark.parametrize("num_objects", [3, 0])
def test_minilm_vlbert_equals_transformers_bert(minilm_dir, minilm_model, num_objects):
    """Exact: BertModel runs the same packed sequence, so every real position must agree in every layer.

    VL-BERT's text tokens attend to the objects and [END]; feeding those slots to BertModel as inputs_embeds with
    VL-BERT's own position ids and an attention mask over the same real slots makes both computations identical
    (padding slots are masked as keys in both and are not compared as queries).
    """
    from transformers import BertModel

    hf = BertModel.from_pretrained(minilm_dir).eval()
    model, h = minilm_model, minilm_model.hidden_size
    gen = torch.Generator().manual_seed(num_objects)
    text_mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3], dtype=torch.bool)
    ids = torch.randint(1000, 30000, (2, 7), generator=gen) * text_mask
    ids[:, 0] = 101
    inputs = dict(
        text_input_ids=ids,
        text_token_type_ids=torch.tensor([[0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]]),
        text_visual_embeddings=torch.randn(2, 7, h, generator=gen),
        text_mask=text_mask,
        object_vl_embeddings=torch.randn(2, num_objects, 2 * h, generator=gen),
        object_mask=torch.tensor([[1, 0, 1], [0, 0, 0]], dtype=torch.bool)[:, :num_objects],
    )
    with torch.no_grad():
        layers, pooled = model(**inputs)
        embeds, position_ids, type_ids, mask = reference_inputs_embeds(model, hf, inputs)
        ref = hf(inputs_embeds=embeds, position_ids=position_ids, token_type_ids=type_ids, attention_mask=mask,
                 output_hidden_states=True)
    assert len(layers) == len(ref.hidden_states) - 1 == 6
    real = mask.bool()
    assert layers[-1].shape[1] == real.shape[1]
    for ours, theirs in zip(layers, ref.hidden_states[1:], strict=True):
        torch.testing.assert_close(ours[real], theirs[real], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pooled, ref.pooler_output, atol=1e-4, rtol=1e-4)


def test_old_layout_loads_identically(minilm_dir, minilm_model, tmp_path, tiny_vlbert_config):
    """gamma/beta names, `bert.` prefix, bert_config.json + pytorch_model.bin -> the same tensors."""
    state = load_file(os.path.join(minilm_dir, "model.safetensors"))
    old = {}
    for key, value in state.items():
        key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        old["bert." + key] = value
    torch.save(old, tmp_path / "pytorch_model.bin")
    with open(os.path.join(minilm_dir, "config.json")) as src, open(tmp_path / "bert_config.json", "w") as dst:
        dst.write(src.read())
    model = VisualLinguisticBert(minilm_vlbert_config(minilm_dir, tiny_vlbert_config))
    missing, unexpected = load_bert_into_vlbert(model, str(tmp_path))
    assert missing == [] and unexpected == []
    reference = minilm_model.state_dict()
    for key, value in model.state_dict().items():
        if key.startswith(("encoder.", "embedding_LayerNorm.", "pooler.", "word_", "position_")):
            assert torch.equal(value, reference[key]), key
    torch.testing.assert_close(model.token_type_embeddings.weight[:2], state["embeddings.token_type_embeddings.weight"])


def test_bert_into_pretraining_heads_and_token_type_rows(tmp_path, tiny_vlbert_config):
    """cls.* routes into the heads; token-type rows 0-1 copied and row 2 kept; a 1-row table fills all three."""
    cfg = tiny_vlbert_config()
    torch.manual_seed(0)
    donor = VisualLinguisticBertForPretraining(cfg)
    bert = {"bert.embeddings.word_embeddings.weight": torch.randn(50, 32),
            "bert.embeddings.token_type_embeddings.weight": torch.randn(2, 32),
            "bert.embeddings.position_ids": torch.arange(64)[None],
            "cls.predictions.transform.dense.weight": torch.randn(32, 32),
            "cls.predictions.bias": torch.randn(50),
            "cls.predictions.decoder.bias": torch.randn(50),
            "cls.seq_relationship.weight": torch.randn(2, 32)}
    torch.save(bert, tmp_path / "pytorch_model.bin")
    row2 = donor.token_type_embeddings.weight[2].clone()
    missing, unexpected = load_bert_into_vlbert(donor, str(tmp_path / "pytorch_model.bin"))
    assert unexpected == ["cls.predictions.decoder.bias"]
    assert "encoder.layer.0.attention.self.query.weight" in missing
    assert donor.mlm_head.predictions.decoder.weight is donor.word_embeddings.weight
    assert torch.equal(donor.mlm_head.predictions.decoder.weight, bert["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(donor.mlm_head.predictions.bias, bert["cls.predictions.bias"])
    assert torch.equal(donor.relationsip_head.caption_image_relationship.weight, bert["cls.seq_relationship.weight"])
    assert torch.equal(donor.token_type_embeddings.weight[:2], bert["bert.embeddings.token_type_embeddings.weight"])
    assert torch.equal(donor.token_type_embeddings.weight[2], row2)
    torch.save({"roberta.embeddings.token_type_embeddings.weight": torch.ones(1, 32)}, tmp_path / "r.bin")
    load_bert_into_vlbert(donor, str(tmp_path / "r.bin"))
    assert torch.equal(donor.token_type_embeddings.weight, torch.ones(3, 32))
    torch.save({"bert.encoder.layer.0.output.dense.weight": torch.ones(32, 60)}, tmp_path / "bad.bin")
    with pytest.raises(CheckpointError, match=r"bad\.bin.*encoder\.layer\.0\.output\.dense\.weight"):
        load_bert_into_vlbert(donor, str(tmp_path / "bad.bin"))


def sheet_keys(pretraining: bool) -> dict[str, tuple]:
    """The base-model state-dict keys and shapes as listed in the fact sheet (§1.12)."""
    keys = {"word_embeddings.weight": (30522, 768), "end_embedding.weight": (1, 768),
            "position_embeddings.weight": (512, 768), "token_type_embeddings.weight": (3, 768)}
    for name in ("embedding_LayerNorm", "visual_ln_text", "visual_ln_object"):
        keys.update({f"{name}.weight": (768,), f"{name}.bias": (768,)})
    for i in range(12):
        p = f"encoder.layer.{i}."
        for sub in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            keys.update({f"{p}{sub}.weight": (768, 768), f"{p}{sub}.bias": (768,)})
        for sub in ("attention.output.LayerNorm", "output.LayerNorm"):
            keys.update({f"{p}{sub}.weight": (768,), f"{p}{sub}.bias": (768,)})
        keys.update({f"{p}intermediate.dense.weight": (3072, 768), f"{p}intermediate.dense.bias": (3072,),
                     f"{p}output.dense.weight": (768, 3072), f"{p}output.dense.bias": (768,)})
    keys.update({"pooler.dense.weight": (768, 768), "pooler.dense.bias": (768,)})
    if pretraining:
        keys.update({
            "relationsip_head.caption_image_relationship.weight": (2, 768),
            "relationsip_head.caption_image_relationship.bias": (2,),
            "mlm_head.predictions.bias": (30522,),
            "mlm_head.predictions.transform.dense.weight": (768, 768),
            "mlm_head.predictions.transform.dense.bias": (768,),
            "mlm_head.predictions.transform.LayerNorm.weight": (768,),
            "mlm_head.predictions.transform.LayerNorm.bias": (768,),
            "mlm_head.predictions.decoder.weight": (30522, 768),
            "mvrc_head.transform.dense.weight": (768, 768), "mvrc_head.transform.dense.bias": (768,),
            "mvrc_head.region_cls_pred.weight": (1601, 768), "mvrc_head.region_cls_pred.bias": (1601,)})
    return keys


BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
            max_position_embeddings=512, visual_size=768, visual_ln=True, visual_region_classes=1601)


@pytest.fixture(scope="module")
def base_pretraining_model(tiny_vlbert_config):
    return VisualLinguisticBertForPretraining(tiny_vlbert_config(**BASE))


def test_base_keys_match_the_original(tiny_vlbert_config):
    model = VisualLinguisticBert(tiny_vlbert_config(**BASE))
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert own == sheet_keys(pretraining=False)
    assert len(own) == 204 and sum(p.numel() for p in model.parameters()) == 109_486_848


def test_original_pretraining_checkpoint_loads_without_gaps(base_pretraining_model, tmp_path, caplog):
    model = base_pretraining_model
    expected = sheet_keys(pretraining=True)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected and len(expected) == 216
    assert sum(p.numel() for p in model.parameters()) == 111_932_797
    word = torch.randn(30522, 768, dtype=torch.float16)
    state = {"module." + k: torch.full(s, 0.5, dtype=torch.float16) for k, s in expected.items()}
    state["module.word_embeddings.weight"] = state["module.mlm_head.predictions.decoder.weight"] = word
    torch.save({"state_dict": state, "optimizer": {}}, tmp_path / "vl-bert-base.model")
    with caplog.at_level(logging.INFO):
        load_partial_pretrain(model, str(tmp_path / "vl-bert-base.model"))
    assert "loaded all 216 tensors" in caplog.text
    assert model.mlm_head.predictions.decoder.weight is model.word_embeddings.weight
    assert model.word_embeddings.weight.dtype == torch.float32
    assert torch.equal(model.word_embeddings.weight, word.float())
    assert torch.all(model.encoder.layer[11].output.dense.weight == 0.5)


class TaskModule(nn.Module):
    """A task module in miniature: VL-BERT under `vlbert`, a head under `final_mlp`."""

    def __init__(self, cfg):
        super().__init__()
        self.vlbert = VisualLinguisticBert(cfg)
        self.final_mlp = nn.Sequential(nn.Linear(32, 32))


def test_prefix_changes_first_match_wins():
    rules = ["vlbert.mvrc_head.transform->final_mlp.0", "vlbert->vlbert._module", "vlbert.encoder->nowhere"]
    renamed = apply_prefix_changes({"vlbert.mvrc_head.transform.dense.weight": 1, "vlbert.encoder.x": 2,
                                    "other.y": 3}, rules)
    assert renamed == {"final_mlp.0.dense.weight": 1, "vlbert._module.encoder.x": 2, "other.y": 3}
    with pytest.raises(ValueError, match="PARTIAL_PRETRAIN_PREFIX_CHANGES"):
        apply_prefix_changes({}, ["no arrow here"])
    assert strip_module_prefix({"module.a": 1, "b": 2}) == {"a": 1, "b": 2}


def test_partial_pretrain_module_prefix_and_rules(tmp_path, caplog, tiny_vlbert_config):
    source = VisualLinguisticBertForPretraining(tiny_vlbert_config())
    state = {"module.vlbert." + k: v.half() for k, v in source.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "pre.model")
    target = TaskModule(tiny_vlbert_config())
    rules = ["module.vlbert.mvrc_head.transform.dense->module.final_mlp.0", "module.vlbert->module.vlbert"]
    with caplog.at_level(logging.INFO):
        renamed = load_partial_pretrain(target, str(tmp_path / "pre.model"), rules)
    assert "module.final_mlp.0.weight" in renamed
    torch.testing.assert_close(target.final_mlp[0].weight, source.mvrc_head.transform.dense.weight.half().float())
    torch.testing.assert_close(target.vlbert.encoder.layer[1].output.dense.weight,
                               source.encoder.layer[1].output.dense.weight.half().float())
    assert target.vlbert.encoder.layer[1].output.dense.weight.dtype == torch.float32
    assert "module.vlbert.mlm_head.predictions.bias" in caplog.text  # unmatched keys are reported


def test_partial_pretrain_errors_name_file_and_key(tmp_path, tiny_vlbert_config):
    target = TaskModule(tiny_vlbert_config())
    torch.save({"vlbert.end_embedding.weight": torch.zeros(2, 32)}, tmp_path / "shape.model")
    with pytest.raises(CheckpointError, match=r"shape\.model.*vlbert\.end_embedding\.weight"):
        load_partial_pretrain(target, str(tmp_path / "shape.model"))
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes\.txt"):
        load_partial_pretrain(target, str(tmp_path / "notes.txt"))
    torch.save({"epoch": 3}, tmp_path / "meta.model")
    with pytest.raises(CheckpointError, match=r"meta\.model.*'epoch'"):
        load_partial_pretrain(target, str(tmp_path / "meta.model"))


def test_resolve_bert_path(tmp_path, minilm_dir):
    net = EasyDict(BERT_PRETRAINED="out/bert", BERT_PRETRAINED_EPOCH=3, BERT_MODEL_NAME=minilm_dir, VLBERT={})
    assert resolve_bert_path(net) == "out/bert-0003.model"
    net.BERT_PRETRAINED = ""
    assert resolve_bert_path(net) == minilm_dir
    net.BERT_MODEL_NAME = str(tmp_path)
    assert resolve_bert_path(net) is None
    net.BERT_MODEL_NAME, net.VLBERT = minilm_dir, EasyDict(from_scratch=True)
    assert resolve_bert_path(net) is None
