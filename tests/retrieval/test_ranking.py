"""R@K of retrieval against a brute-force ranking (sort every candidate list, ties placed pessimistically) on tiny
score matrices full of ties, and against a hand-worked example."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval.ranking import METRIC_NAMES, pessimistic_ranks, retrieval_metrics


def brute_force_rank(scores: list[float], truth: list[bool]) -> int:
    """Sort the candidates by score, best first, a ground truth after every wrong candidate of equal score; the
    position of the first ground truth."""
    order = sorted(range(len(scores)), key=lambda c: (-scores[c], truth[c]))
    return next(position for position, c in enumerate(order) if truth[c])


def brute_force_metrics(i2t: np.ndarray, t2i: np.ndarray, owner: list[int]) -> dict[str, float]:
    txt_ranks = [brute_force_rank(list(i2t[i]), [o == i for o in owner]) for i in range(i2t.shape[0])]
    img_ranks = [brute_force_rank(list(t2i[t]), [i == owner[t] for i in range(t2i.shape[1])])
                 for t in range(t2i.shape[0])]
    out = {}
    for prefix, ranks in (("txt", txt_ranks), ("img", img_ranks)):
        for k in (1, 5, 10):
            out[f"{prefix}_r{k}"] = 100.0 * sum(r < k for r in ranks) / len(ranks)
        out[f"{prefix}_r_mean"] = sum(out[f"{prefix}_r{k}"] for k in (1, 5, 10)) / 3
    out["r_mean"] = (out["txt_r_mean"] + out["img_r_mean"]) / 2
    return out


@pytest.mark.parametrize("seed", range(12))
def test_metrics_equal_a_brute_force_ranking_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    images = int(rng.integers(3, 15))
    owner = list(range(images)) + [int(i) for i in rng.integers(images, size=int(rng.integers(0, 3 * images)))]
    rng.shuffle(owner)
    levels = int(rng.integers(2, 5))  # a few score levels: ties everywhere
    i2t = rng.integers(levels, size=(images, len(owner))).astype(np.float64)
    t2i = rng.integers(levels, size=(len(owner), images)).astype(np.float64)
    if seed % 3 == 0:
        i2t[0, :] = -np.inf  # a row never scored: every candidate ties
    got = retrieval_metrics(torch.from_numpy(i2t), torch.from_numpy(t2i), owner)
    assert list(got) == list(METRIC_NAMES)
    assert got == pytest.approx(brute_force_metrics(i2t, t2i, owner), abs=1e-9)


def test_hand_worked_example_with_ties():
    # 3 images; captions 0, 1 describe image 0, caption 2 image 1, caption 3 image 2
    owner = [0, 0, 1, 2]
    t2i = torch.tensor([[0.9, 0.9, 0.1],    # ties with a wrong image: rank 1 (not 0)
                        [0.8, 0.2, 0.3],    # rank 0
                        [0.5, 0.5, 0.5],    # constant: both wrong images count, rank 2
                        [0.1, 0.7, 0.7]])   # ground truth ties one wrong image above nothing else: rank 1
    i2t = torch.tensor([[0.4, 0.4, 0.4, 0.1],   # two ground truths tied with a wrong caption: rank 1
                        [0.0, 0.0, 0.5, 0.0],   # rank 0
                        [0.3, 0.2, 0.1, 0.3]])  # tie with caption 0: rank 1
    truth = torch.tensor([[o == i for i in range(3)] for o in owner])
    assert pessimistic_ranks(t2i, truth).tolist() == [1, 0, 2, 1]
    assert pessimistic_ranks(i2t, truth.T).tolist() == [1, 0, 1]
    metrics = retrieval_metrics(i2t, t2i, owner)
    assert metrics["img_r1"] == pytest.approx(25.0) and metrics["img_r5"] == pytest.approx(100.0)
    assert metrics["txt_r1"] == pytest.approx(100 / 3) and metrics["txt_r10"] == pytest.approx(100.0)
    assert metrics["r_mean"] == pytest.approx((metrics["txt_r_mean"] + metrics["img_r_mean"]) / 2)


def test_a_constant_matrix_is_no_hit_at_one():
    owner = [i for i in range(20) for _ in range(5)]
    metrics = retrieval_metrics(torch.zeros(20, 100), torch.zeros(100, 20), owner)
    assert metrics["txt_r1"] == metrics["img_r1"] == metrics["img_r10"] == 0.0


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(torch.tensor([[float("nan")]]), torch.zeros(1, 1), [0])
    with pytest.raises(ValueError, match="do not fit"):
        retrieval_metrics(torch.zeros(2, 3), torch.zeros(3, 3), [0, 1, 1])
    with pytest.raises(ValueError, match="no ground-truth"):
        retrieval_metrics(torch.zeros(2, 1), torch.zeros(1, 2), [0])
