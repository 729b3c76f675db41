"""The two-stage evaluation against brute force: the chunked first stage against one full sort of the whole
similarity matrix, and `retrieval/test.py` against scoring every (caption, image) pair with the module directly."""
from __future__ import annotations

import json

import pytest
import torch

from common.data.collate import collate_dicts
from common.data.transforms import build_transform
from common.engine.evaluate import load_module_for_inference
from retrieval import test as test_script
from retrieval.dataset import ImageItems, TextItems
from retrieval.ranking import retrieval_metrics
from retrieval.task import RETRIEVAL, karpathy_split
from retrieval.two_stage import first_stage


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_chunked_first_stage_equals_one_full_sort(chunk):
    torch.manual_seed(0)
    texts = torch.nn.functional.normalize(torch.randn(23, 8), dim=1)
    images = torch.nn.functional.normalize(torch.randn(9, 8), dim=1)
    texts[5] = texts[4]  # equal rows and repeated images make ties
    images[3] = images[2]
    got = first_stage(texts, images, k=4, chunk=chunk)
    full = texts @ images.T
    for query, row in enumerate(full):
        order = sorted(range(9), key=lambda i: (-float(row[i]), i))[:4]
        assert got.t2i_index[query].tolist() == order
    for query, column in enumerate(full.T):
        order = sorted(range(23), key=lambda t: (-float(column[t]), t))[:4]
        assert got.i2t_index[query].tolist() == order
    torch.testing.assert_close(got.t2i_similarity, full.gather(1, got.t2i_index))


@pytest.fixture(scope="module")
def every_pair(retrieval_tiny_checkpoint):
    """Cosine similarity and matching logit of every (caption, image) pair of the test split, [T, I] each."""
    cfg, ckpt = retrieval_tiny_checkpoint
    module = load_module_for_inference(RETRIEVAL, cfg, ckpt)
    split = karpathy_split(cfg, "test")
    transform = build_transform(cfg, "test")
    images = [ImageItems(split, transform)[i] for i in range(len(split.images))]
    texts = [TextItems(split)[t] for t in range(len(split.texts))]
    logits = torch.zeros(len(texts), len(images))
    with torch.no_grad():
        image_emb = module(collate_dicts(images, ImageItems.PAD_RULES))["image_embedding"]
        text_emb = module(collate_dicts(texts, TextItems.PAD_RULES))["text_embedding"]
        for i, image in enumerate(images):
            batch = collate_dicts([{**image, "text": t["text"]} for t in texts], ImageItems.PAD_RULES)
            logits[:, i] = module(batch)["match_logits"]
    return text_emb @ image_emb.T, logits, split


@pytest.mark.parametrize("k,rescore", [(1000, "itm"), (3, "itm+itc"), (4, "itc")])
def test_test_script_equals_scoring_every_pair(retrieval_tiny_checkpoint, every_pair, small_world_root,
                                               vocab_only_bert_dir, tmp_path, k, rescore):
    from retrieval_fixtures import TOY_CFG, tiny_overrides

    _, ckpt = retrieval_tiny_checkpoint
    result = test_script.main(["--cfg", TOY_CFG, "--ckpt", ckpt, "--result-path", str(tmp_path), "--result-name",
                               "tiny", "--k", str(k), "--chunk", "7", "--rescore", rescore, "--bs", "5",
                               *tiny_overrides(vocab_only_bert_dir, small_world_root)])
    similarity, logits, split = every_pair
    scores = ((logits.double() if rescore != "itc" else 0) + (similarity.double() if rescore != "itm" else 0))
    if k < len(split.images):  # only each query's k best by similarity are re-scored, the rest rank below
        keep_t2i = torch.zeros_like(scores, dtype=torch.bool).scatter(
            1, torch.sort(similarity, dim=1, descending=True, stable=True).indices[:, :k], True)
        keep_i2t = torch.zeros_like(scores.T, dtype=torch.bool).scatter(
            1, torch.sort(similarity.T, dim=1, descending=True, stable=True).indices[:, :k], True)
        t2i, i2t = scores.masked_fill(~keep_t2i, float("-inf")), scores.T.masked_fill(~keep_i2t, float("-inf"))
    else:
        t2i, i2t = scores, scores.T
    expected = retrieval_metrics(i2t, t2i, split.text_image)
    assert result.metrics == pytest.approx(expected, abs=1e-9)
    torch.testing.assert_close(result.scores_t2i, t2i, rtol=1e-4, atol=1e-4)
    with open(result.path) as f:
        written = json.load(f)
    assert result.path == str(tmp_path / "tiny_retrieval_test.json")
    assert written["metrics"] == pytest.approx(expected) and written["num_texts"] == len(split.texts)
    best = int(torch.sort(t2i[0], descending=True, stable=True).indices[0])
    assert written["text_to_image"][0]["retrieved"][0] == split.images[best].image_id
