"""VCR module: text assembly variants, choices folded into the batch, losses, checkpoint key map, fine-tune init."""
from __future__ import annotations

import math
import os

import pytest
import torch
from vcr_fixtures import tiny_cfg, to_original_keys, vcr_line, write_vcr_dir

from common.engine.evaluate import load_trained_weights
from vcr.module import ResNetVLBERTForVCR, assemble_pairs
from vcr.task import TASK, after_load_pretrain, build_vcr_dataset, map_vcr_checkpoint_keys

QUESTION = ["What", "are", [1, 3], "doing", "?"]
ANSWERS = [["Eating", "."], [[0], "rides", [2]], ["Sleeping"], ["Nothing", "at", "all"]]
RATIONALES = [["Because", [0], "is", "hungry"], ["No"], ["Yes"], ["Maybe"]]


@pytest.fixture
def data_dir(tmp_path):
    return write_vcr_dir(str(tmp_path / "vcr"), {"train": [vcr_line(0, "train", QUESTION, ANSWERS, RATIONALES, 1, 0)]})


def build(vocab_only_dir, data_dir, *extra):
    torch.manual_seed(0)
    cfg = tiny_cfg(vocab_only_dir, data_dir, *extra)
    module = ResNetVLBERTForVCR(cfg, cls_id=101, sep_id=102)
    return cfg, module


def one_batch(cfg, copies=2, label=1):
    item = build_vcr_dataset(cfg, "train")[0]
    batch = {k: torch.stack([item[k]] * copies) for k in ("image", "boxes", "segms", "classes", "im_info",
                                                           "question_ids", "question_tags", "answer_ids",
                                                           "answer_tags")}
    batch["label"] = torch.full((copies,), label)
    return batch


def test_assemble_pairs_variants_by_hand():
    first, first_tags = torch.tensor([[5, 6, 0], [7, 0, 0]]), torch.tensor([[1, 0, 0], [2, 0, 0]])
    second, second_tags = torch.tensor([[8, 0], [9, 10]]), torch.tensor([[3, 0], [0, 4]])
    out = assemble_pairs(first, first_tags, second, second_tags, cls_id=1, sep_id=2)
    assert out["input_ids"].tolist() == [[1, 5, 6, 2, 8, 2], [1, 7, 2, 9, 10, 2]]
    assert out["tags"].tolist() == [[0, 1, 0, 0, 3, 0], [0, 2, 0, 0, 4, 0]]
    assert out["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1]]
    assert out["text_mask"].all()
    one = assemble_pairs(first, first_tags, second, second_tags, cls_id=1, sep_id=2, one_sentence=True)
    assert one["input_ids"].tolist() == [[1, 5, 6, 8, 2], [1, 7, 9, 10, 2]]
    assert one["token_type_ids"].sum() == 0
    shorter = assemble_pairs(first[1:], first_tags[1:], second[:1], second_tags[:1], cls_id=1, sep_id=2)
    assert shorter["input_ids"].tolist() == [[1, 7, 2, 8, 2]]


def test_answer_first_swaps_segments(vocab_only_dir, data_dir):
    cfg, module = build(vocab_only_dir, data_dir, "NETWORK.ANSWER_FIRST", "true")
    batch = one_batch(cfg, copies=1)
    text = module.build_text(batch)
    n_answer = int((batch["answer_ids"][0, 0] > 0).sum())
    assert text["input_ids"][0, 1:1 + n_answer].tolist() == batch["answer_ids"][0, 0, :n_answer].tolist()


def test_choice_scores_are_independent_of_choice_order_and_batch(vocab_only_dir, data_dir):
    cfg, module = build(vocab_only_dir, data_dir)
    module.eval()
    batch = one_batch(cfg, copies=2)
    perm = torch.tensor([2, 0, 3, 1])
    permuted = dict(batch)
    for key in ("question_ids", "question_tags", "answer_ids", "answer_tags"):
        permuted[key] = batch[key].clone()
        permuted[key][1] = batch[key][1, perm]
    with torch.no_grad():
        logits = module(batch)["label_logits"]
        logits_perm = module(permuted)["label_logits"]
        single = module({k: v[:1] for k, v in batch.items()})["label_logits"]
    assert logits.shape == (2, 4)
    torch.testing.assert_close(logits_perm[1], logits[0, perm])
    torch.testing.assert_close(single[0], logits[0])
    assert not torch.allclose(logits[0], logits[0, perm])  # the choices do get different scores


def test_sigmoid_and_softmax_answer_losses_by_formula(vocab_only_dir, data_dir):
    for sigmoid in ("true", "false"):
        cfg, module = build(vocab_only_dir, data_dir, "NETWORK.CLASSIFIER_SIGMOID", sigmoid,
                            "NETWORK.ENABLE_CNN_REG_LOSS", "false")
        module.eval()
        out = module(one_batch(cfg, label=1))
        z = out["label_logits"].detach()
        if sigmoid == "true":
            target = torch.tensor([0.0, 1.0, 0.0, 0.0])
            expected = -(target * torch.log(torch.sigmoid(z)) + (1 - target) * torch.log(1 - torch.sigmoid(z))).mean()
        else:
            expected = (torch.logsumexp(z, 1) - z[:, 1]).mean()
        torch.testing.assert_close(out["ans_loss"].detach(), expected)
        torch.testing.assert_close(out["loss"].detach(), expected)


def test_cnn_regulariser_on_top_uniform_logits_give_log81(vocab_only_dir, data_dir):
    cfg, module = build(vocab_only_dir, data_dir, "NETWORK.CNN_LOSS_TOP", "true", "NETWORK.CNN_LOSS_WEIGHT", "2.0")
    torch.nn.init.zeros_(module.cnn_loss_reg[2].weight)
    torch.nn.init.zeros_(module.cnn_loss_reg[2].bias)
    module.eval()
    out = module(one_batch(cfg))
    assert out["cnn_regularization_loss"].item() == pytest.approx(math.log(81), rel=1e-6)
    assert out["loss"].item() == pytest.approx(out["ans_loss"].item() + 2 * math.log(81), rel=1e-6)


def test_object_word_embed_mode_3_is_mean_word_embedding(vocab_only_dir, data_dir):
    cfg, module = build(vocab_only_dir, data_dir, "NETWORK.VLBERT.object_word_embed_mode", "3")
    batch = one_batch(cfg, copies=1)
    text = module.build_text(batch)
    linguistic = module.object_linguistic(batch["classes"], text, 4)
    ids = [t for t in text["input_ids"][2].tolist() if t not in (0, 101, 102)]
    expected = module.vlbert.word_embeddings.weight[ids].mean(0)
    torch.testing.assert_close(linguistic[2, 3], expected)


def test_original_vcr_checkpoint_keys_load_through_key_map(vocab_only_dir, data_dir, tmp_path):
    cfg, source = build(vocab_only_dir, data_dir, "NETWORK.CNN_LOSS_TOP", "true")
    original = to_original_keys(source.state_dict())
    assert any(k.startswith("module.vlbert._module.encoder.") for k in original)
    assert any(k.startswith("module.cnn_loss_reg.") for k in original)
    path = os.path.join(tmp_path, "vcr-original.model")
    torch.save({"state_dict": original}, path)
    torch.manual_seed(1)
    target = ResNetVLBERTForVCR(cfg, cls_id=101, sep_id=102)
    load_trained_weights(TASK, target, path)  # strict: every key must map onto the module
    source.eval()
    target.eval()
    batch = one_batch(cfg)
    with torch.no_grad():
        torch.testing.assert_close(target(batch)["label_logits"], source(batch)["label_logits"])


def test_segment_init_and_relationship_head_init(vocab_only_dir, data_dir):
    cfg, module = build(vocab_only_dir, data_dir, "NETWORK.PARTIAL_PRETRAIN_SEGMB_INIT", "true",
                        "NETWORK.LOAD_REL_HEAD", "true", "NETWORK.CLASSIFIER_TYPE", "1fc")
    hidden = cfg.NETWORK.VLBERT.hidden_size
    rel_weight = torch.stack([torch.full((hidden,), 0.25), torch.arange(hidden, dtype=torch.float32)])
    checkpoint = {"module.vlbert._module.relationsip_head.caption_image_relationship.weight": rel_weight,
                  "module.vlbert._module.relationsip_head.caption_image_relationship.bias": torch.tensor([1.0, 3.5])}
    after_load_pretrain(module, cfg, checkpoint)
    table = module.vlbert.token_type_embeddings.weight
    assert torch.equal(table[1], table[0]) and not torch.equal(table[2], table[0])
    assert torch.equal(module.final_mlp[1].weight[0], torch.arange(hidden, dtype=torch.float32) - 0.25)
    assert module.final_mlp[1].bias.item() == 2.5


def test_partial_pretrain_with_original_vcr_prefix_rules(vocab_only_dir, data_dir, tmp_path):
    from common.model.pretrained import load_partial_pretrain

    cfg, source = build(vocab_only_dir, data_dir, "NETWORK.CNN_LOSS_TOP", "true")
    hidden = cfg.NETWORK.VLBERT.hidden_size
    pretrained = {"module." + k: v for k, v in source.state_dict().items() if k.startswith("vlbert.")}
    mvrc_weight = torch.randn(hidden, hidden)
    pretrained["module.vlbert.mvrc_head.transform.dense.weight"] = mvrc_weight
    pretrained["module.vlbert.mvrc_head.transform.dense.bias"] = torch.randn(hidden)
    path = str(tmp_path / "vl-bert-pretrained.model")
    torch.save({"state_dict": pretrained}, path)
    rules = [  # as in cfgs/vcr/base_q2a_4x16G_fp32.yaml
        "vlbert.mvrc_head.transform->cnn_loss_reg.0", "module.vlbert.mvrc_head.transform->module.cnn_loss_reg.0",
        "module.vlbert->module.vlbert._module", "vlbert->vlbert._module"]
    torch.manual_seed(3)
    target = ResNetVLBERTForVCR(cfg, cls_id=101, sep_id=102)
    renamed = load_partial_pretrain(target, path, rules, key_map=map_vcr_checkpoint_keys)
    assert any(k.startswith("module.vlbert._module.") for k in renamed)
    after_load_pretrain(target, cfg, renamed)
    own = target.state_dict()
    for key, value in source.state_dict().items():
        if key.startswith("vlbert."):
            assert torch.equal(own[key], value), key
    assert torch.equal(own["cnn_loss_reg.0.dense.weight"], mvrc_weight)


def test_engine_loads_partial_pretrain_once_through_the_key_map(vocab_only_dir, data_dir, tmp_path, caplog):
    """`Task.checkpoint_key_map` is applied by the engine before the one PARTIAL_PRETRAIN load: an original
    checkpoint with the original YAML's prefix rules fills every VL-BERT weight, reported by a single load line."""
    from common.engine.run import load_pretrained_weights

    _, source = build(vocab_only_dir, data_dir)
    pretrained = {"module." + k: v for k, v in source.state_dict().items() if k.startswith("vlbert.")}
    path = str(tmp_path / "vl-bert-pretrained.model")
    torch.save({"state_dict": pretrained}, path)
    cfg, target = build(vocab_only_dir, data_dir, "NETWORK.PARTIAL_PRETRAIN", path,
                        "NETWORK.PARTIAL_PRETRAIN_PREFIX_CHANGES",
                        "['module.vlbert->module.vlbert._module', 'vlbert->vlbert._module']")
    with torch.no_grad():
        for value in target.vlbert.parameters():
            value.add_(1.0)  # differs from the checkpoint everywhere
    with caplog.at_level("INFO", logger="common.model.state_dict_io"):
        load_pretrained_weights(TASK, target, cfg)
    reports = [r.getMessage() for r in caplog.records if r.name == "common.model.state_dict_io" and path in r.message]
    assert len(reports) == 1 and f"loaded {len(pretrained)} tensors" in reports[0], reports
    own = target.state_dict()
    for key, value in source.state_dict().items():
        if key.startswith("vlbert."):
            assert torch.equal(own[key], value), key
