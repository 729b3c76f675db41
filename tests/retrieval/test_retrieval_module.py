"""The retrieval module's losses and modes, each against a computation written out independently: the contrastive
loss against per-row log-softmax sums, the hard negatives against a loop over the similarity, the matching loss
against BCE of the logits the pair mode gives for the same pairs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from common.data.collate import collate_dicts
from retrieval.module import contrastive_loss, hard_negatives
from retrieval.task import RETRIEVAL


def test_contrastive_loss_by_hand():
    torch.manual_seed(0)
    similarity = torch.randn(4, 4)
    image_index = torch.tensor([0, 1, 0, 2])  # captions 0 and 2 describe one image
    positive = image_index[:, None] == image_index[None, :]
    expected = 0.0
    for row in range(4):
        mates = [c for c in range(4) if positive[row, c]]
        t2i = -sum(similarity[row, c] - torch.logsumexp(similarity[row], 0) for c in mates) / len(mates)
        i2t = -sum(similarity[c, row] - torch.logsumexp(similarity[:, row], 0) for c in mates) / len(mates)
        expected += (t2i + i2t) / 2 / 4
    assert float(contrastive_loss(similarity, positive)) == pytest.approx(float(expected), rel=1e-6)


def test_hard_negatives_by_loop():
    torch.manual_seed(1)
    similarity = torch.randn(5, 5).round(decimals=1)  # rounding makes ties: the lower row must win
    excluded = torch.eye(5, dtype=torch.bool)
    excluded[:, 3] = True  # column 3 has no candidate
    excluded[1, 0] = True
    columns, rows = hard_negatives(similarity, excluded)
    expected = []
    for c in range(5):
        candidates = [r for r in range(5) if not excluded[r, c]]
        if candidates:
            best = max(similarity[r, c] for r in candidates)
            expected.append((c, min(r for r in candidates if similarity[r, c] == best)))
    assert list(zip(columns.tolist(), rows.tolist(), strict=True)) == expected


def test_training_losses_score_the_pairs_the_pair_mode_scores(retrieval_tiny_cfg):
    cfg = retrieval_tiny_cfg()
    torch.manual_seed(0)
    module = RETRIEVAL.build_module(cfg).eval()
    dataset = RETRIEVAL.build_dataset(cfg, "val")
    items = [dataset[i] for i in (0, 1, 5, 12, 20, 33)]  # captions 0 and 1 share an image
    batch = collate_dicts(items, dataset.PAD_RULES)
    with torch.no_grad():
        out = module(batch)
        texts = module({"text": batch["text"]})["text_embedding"]
        images = module({k: batch[k] for k in ("boxes", "box_features", "im_info")})["image_embedding"]
    similarity = texts @ images.T / cfg.NETWORK.ITC_TEMPERATURE
    torch.testing.assert_close(out["similarity"], similarity)
    # the pairs: positives, then per image its best other caption, then per caption its best other image
    owner = batch["image_index"].tolist()
    pairs = [(i, i) for i in range(6)]
    pairs += [(max((t for t in range(6) if owner[t] != owner[i]), key=lambda t: similarity[t, i]), i)
              for i in range(6)]
    pairs += [(t, max((i for i in range(6) if owner[i] != owner[t]), key=lambda i: similarity[t, i]))
              for t in range(6)]
    captions, images_ = [p[0] for p in pairs], [p[1] for p in pairs]
    pair_batch = {"text": batch["text"][captions], "boxes": batch["boxes"][images_],
                  "box_features": batch["box_features"][images_], "im_info": batch["im_info"][images_]}
    with torch.no_grad():
        logits = module(pair_batch)["match_logits"]
    torch.testing.assert_close(out["match_logits"], logits, rtol=1e-4, atol=1e-5)
    labels = torch.tensor([1.0] * 6 + [0.0] * 12)
    assert torch.equal(out["match_labels"], labels)
    assert float(out["itm_loss"]) == pytest.approx(float(F.binary_cross_entropy_with_logits(logits, labels)), rel=1e-4)
    assert float(out["loss"]) == pytest.approx(float(out["itc_loss"] + out["itm_loss"]), rel=1e-6)
    assert math.isfinite(float(out["itc_loss"]))


def test_embeddings_are_unit_vectors_and_do_not_depend_on_the_batch(retrieval_tiny_cfg):
    cfg = retrieval_tiny_cfg()
    module = RETRIEVAL.build_module(cfg).eval()
    dataset = RETRIEVAL.build_dataset(cfg, "test")
    batch = collate_dicts([dataset[i] for i in (0, 9, 17)], dataset.PAD_RULES)
    alone = collate_dicts([dataset[9]], dataset.PAD_RULES)
    with torch.no_grad():
        texts = module({"text": batch["text"]})["text_embedding"]
        text_alone = module({"text": alone["text"]})["text_embedding"]
    torch.testing.assert_close(texts.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(texts[1], text_alone[0], rtol=1e-4, atol=1e-5)  # padding does not leak in


def test_first_stage_reads_the_cls_state_and_the_pooler_belongs_to_the_matching_head(retrieval_tiny_cfg):
    """The dual encoder projects the last layer's [CLS] state itself: the pooler the matching head trains leaves
    both embeddings unchanged (sharing it kept the contrastive loss at ln B on the toy world), while the matching
    logits move with it; and the embeddings equal the projections of that state, computed here from the encoder."""
    cfg = retrieval_tiny_cfg()
    torch.manual_seed(0)
    module = RETRIEVAL.build_module(cfg).eval()
    module.itc_image_norm.running_mean.normal_()  # statistics other than (0, 1), so the test sees them applied
    module.itc_image_norm.running_var.uniform_(0.5, 2.0)
    dataset = RETRIEVAL.build_dataset(cfg, "test")
    batch = collate_dicts([dataset[i] for i in (0, 9, 17)], dataset.PAD_RULES)
    image_batch = {k: batch[k] for k in ("boxes", "box_features", "im_info")}
    with torch.no_grad():
        before = (module({"text": batch["text"]})["text_embedding"], module(image_batch)["image_embedding"],
                  module({"text": batch["text"], **image_batch})["match_logits"])
        regions = module.encode_regions(image_batch)
        ids = torch.tensor([module.cls_id, module.sep_id]).expand(3, -1)
        cls_state = module.vlbert(ids, torch.zeros_like(ids), regions.obj_reps[:, :1].expand(-1, 2, -1), ids > 0,
                                  module.object_inputs(regions.obj_reps), regions.box_mask,
                                  output_all_encoded_layers=False).encoded[:, 0]
        torch.testing.assert_close(
            before[1], F.normalize(module.itc_image_proj(module.itc_image_norm(cls_state)), dim=-1))
        module.vlbert.pooler.dense.weight.mul_(-3.0)
        after = (module({"text": batch["text"]})["text_embedding"], module(image_batch)["image_embedding"],
                 module({"text": batch["text"], **image_batch})["match_logits"])
    torch.testing.assert_close(after[0], before[0])
    torch.testing.assert_close(after[1], before[1])
    assert not torch.allclose(after[2], before[2])


def test_a_component_common_to_every_cls_state_does_not_reach_the_embeddings(retrieval_tiny_cfg):
    """After pre-training, the [CLS] states of every caption (and of every image) share one large component; the
    dual encoder standardises them over the batch before projecting, so adding one vector to every [CLS] state leaves
    the training embeddings as they were, while at evaluation the running statistics of training are used."""
    cfg = retrieval_tiny_cfg("NETWORK.VLBERT.hidden_dropout_prob", "0.0",
                             "NETWORK.VLBERT.attention_probs_dropout_prob", "0.0")
    torch.manual_seed(0)
    module = RETRIEVAL.build_module(cfg).train()
    dataset = RETRIEVAL.build_dataset(cfg, "test")
    batch = collate_dicts([dataset[i] for i in (0, 9, 17, 30)], dataset.PAD_RULES)
    image_batch = {k: batch[k] for k in ("boxes", "box_features", "im_info")}
    offset = 10.0 * torch.randn(cfg.NETWORK.VLBERT.hidden_size)

    def add_offset(_module, _inputs, output):
        encoded = output.encoded.clone()
        encoded[:, 0] += offset
        return output._replace(encoded=encoded)

    def embeddings():  # the box-feature projection has a dropout of its own: the same draws both times
        torch.manual_seed(1)
        return module({"text": batch["text"]})["text_embedding"], module(image_batch)["image_embedding"]

    with torch.no_grad():
        plain = embeddings()
        handle = module.vlbert.register_forward_hook(add_offset)
        shifted = embeddings()
        handle.remove()
    torch.testing.assert_close(shifted[0], plain[0], rtol=0, atol=2e-3)
    torch.testing.assert_close(shifted[1], plain[1], rtol=0, atol=2e-3)
    # the running statistics followed the batches (the shifted ones included) and evaluation reads them
    assert module.itc_text_norm.running_mean.abs().max() > 1.0
    with torch.no_grad():
        training_alone = module({"text": batch["text"][:1]})["text_embedding"]  # one row: running statistics
        module.eval()
        evaluated = module({"text": batch["text"]})["text_embedding"]
    torch.testing.assert_close(training_alone[0], evaluated[0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(evaluated, plain[0], atol=1e-2)
