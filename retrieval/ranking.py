"""Recall@K of image-text retrieval in both directions, from two score matrices.

Names and scale follow ALBEF (and BLIP, X-VLM after it): `txt_r{1,5,10}` is image->text retrieval (an image
queries every caption), `img_r{1,5,10}` is text->image retrieval (a caption queries every image), in percent;
`txt_r_mean` / `img_r_mean` average the three recalls of one direction and `r_mean` the six. UNITER reports the
same keys as fractions of 1.

Rank of a query = the number of wrong candidates that score at least as high as its best ground truth (an image
has five captions; the best-scoring one counts, as in ALBEF/UNITER). A tie with a wrong candidate counts against
the ground truth (the pessimistic rank), so a constant score matrix gives R@K = 0 and not an accidental 100. The
query is a hit at K when its rank < K. Without ties this equals the position of the first ground truth in the
sorted candidate list, the usual definition.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

RECALL_KS = (1, 5, 10)
METRIC_NAMES = ("txt_r1", "txt_r5", "txt_r10", "txt_r_mean", "img_r1", "img_r5", "img_r10", "img_r_mean", "r_mean")


def pessimistic_ranks(scores: Tensor, truth: Tensor) -> Tensor:
    """scores [Q, C] (float, no NaN) and truth [Q, C] bool (at least one True per row) -> rank [Q] (long): the
    number of non-ground-truth candidates whose score is >= the row's best ground-truth score."""
    if scores.shape != truth.shape or scores.dim() != 2:
        raise ValueError(f"scores {tuple(scores.shape)} and truth {tuple(truth.shape)} must be the same [Q, C] shape")
    if torch.isnan(scores).any():
        raise ValueError("retrieval scores contain NaN")
    if not truth.any(1).all():
        raise ValueError(f"query {int((~truth.any(1)).nonzero()[0])} has no ground-truth candidate")
    best_truth = scores.masked_fill(~truth, float("-inf")).max(1, keepdim=True).values
    return ((scores >= best_truth) & ~truth).sum(1)


def recall_at(ranks: Tensor, ks: Sequence[int] = RECALL_KS) -> list[float]:
    """Percent of queries with rank < K, for each K."""
    return [100.0 * float((ranks < k).double().mean()) for k in ks]


def truth_matrix(text_to_image: Sequence[int], num_images: int) -> Tensor:
    """[T, I] bool: caption t describes image text_to_image[t]."""
    owner = torch.as_tensor(list(text_to_image), dtype=torch.long)
    if owner.numel() and (owner.min() < 0 or owner.max() >= num_images):
        raise ValueError(f"caption image indices must lie in [0, {num_images}), found {owner.min()}..{owner.max()}")
    return owner[:, None] == torch.arange(num_images)[None, :]


def retrieval_metrics(scores_i2t: Tensor, scores_t2i: Tensor, text_to_image: Sequence[int]) -> dict[str, float]:
    """scores_i2t [I, T] (image queries, caption candidates), scores_t2i [T, I], text_to_image [T] -> the nine
    metrics of METRIC_NAMES (percent). Every image needs at least one caption."""
    truth = truth_matrix(text_to_image, scores_i2t.shape[0])
    if scores_t2i.shape != truth.shape or scores_i2t.shape != truth.T.shape:
        raise ValueError(f"score matrices {tuple(scores_i2t.shape)} (i2t) and {tuple(scores_t2i.shape)} (t2i) do "
                         f"not fit {truth.shape[0]} captions of {truth.shape[1]} images")
    txt = recall_at(pessimistic_ranks(scores_i2t.double(), truth.T))
    img = recall_at(pessimistic_ranks(scores_t2i.double(), truth))
    out = {f"txt_r{k}": v for k, v in zip(RECALL_KS, txt, strict=True)}
    out["txt_r_mean"] = sum(txt) / len(txt)
    out.update({f"img_r{k}": v for k, v in zip(RECALL_KS, img, strict=True)})
    out["img_r_mean"] = sum(img) / len(img)
    out["r_mean"] = (out["txt_r_mean"] + out["img_r_mean"]) / 2
    return {name: out[name] for name in METRIC_NAMES}
