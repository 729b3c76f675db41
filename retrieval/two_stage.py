"""The two-stage ranking of retrieval: the dual-encoder similarity of every caption with every image, computed in
chunks of rows that the processes share out (chunk c on rank c mod world size), keeps the best k candidates per
query; the matching head then re-scores those (caption, image) pairs, and the final score matrices rank them above
every candidate it did not see."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from common.engine import dist

RESCORE_RULES = ("itm", "itm+itc", "itc")


@dataclass(frozen=True)
class Candidates:
    """The first stage's choice: per caption its k best images, per image its k best captions (best first, ties to
    the lower index), with their similarities."""

    t2i_index: Tensor  # [T, k] long
    t2i_similarity: Tensor  # [T, k] float
    i2t_index: Tensor  # [I, k'] long
    i2t_similarity: Tensor  # [I, k'] float

    def pairs(self) -> list[tuple[int, int]]:
        """Every (caption, image) pair either direction keeps, once, ordered by image then caption (pairs of one
        image follow each other, so its box file is read once)."""
        chosen = {(t, i) for t, row in enumerate(self.t2i_index.tolist()) for i in row}
        chosen |= {(t, i) for i, row in enumerate(self.i2t_index.tolist()) for t in row}
        return sorted(chosen, key=lambda pair: (pair[1], pair[0]))


def top_k_rows(queries: Tensor, keys: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(indices [Q, k], similarities [Q, k]) of the k keys [K, E] most similar to each query [Q, E] (dot product),
    best first; a stable sort, so equal similarities keep the lower key index first."""
    similarity = queries @ keys.T
    order = torch.sort(similarity, dim=1, descending=True, stable=True).indices[:, :k]
    return order, similarity.gather(1, order)


def first_stage(text_embeddings: Tensor, image_embeddings: Tensor, k: int, chunk: int) -> Candidates:
    """Top-k candidates both ways; the [T, I] similarity is never held whole: rows are computed `chunk` at a time,
    and each process computes its share of the chunks (gathered on every rank). Chunk boundaries do not depend on
    the number of processes, so neither do the results."""
    if k < 1 or chunk < 1:
        raise ValueError(f"--k and --chunk must be >= 1, found {k} and {chunk}")
    jobs = [("t2i", start) for start in range(0, len(text_embeddings), chunk)]
    jobs += [("i2t", start) for start in range(0, len(image_embeddings), chunk)]
    rank, world = dist.rank(), dist.world_size()
    mine = {}
    for job in tqdm(jobs[rank::world], desc="first stage", disable=rank != 0):
        direction, start = job
        queries, keys = ((text_embeddings, image_embeddings) if direction == "t2i"
                         else (image_embeddings, text_embeddings))
        mine[job] = top_k_rows(queries[start:start + chunk], keys, min(k, len(keys)))
    done = {job: part for parts in dist.all_gather_object(mine) for job, part in parts.items()}
    t2i = [done[job] for job in jobs if job[0] == "t2i"]
    i2t = [done[job] for job in jobs if job[0] == "i2t"]
    return Candidates(torch.cat([i for i, _ in t2i]), torch.cat([s for _, s in t2i]),
                      torch.cat([i for i, _ in i2t]), torch.cat([s for _, s in i2t]))


def final_scores(candidates: Candidates, pair_logits: dict[tuple[int, int], float], num_texts: int,
                 num_images: int, rescore: str = "itm+itc") -> tuple[Tensor, Tensor]:
    """(scores_i2t [I, T], scores_t2i [T, I]): a re-scored candidate gets its matching logit ("itm", as ALBEF) or
    the logit plus its first-stage similarity ("itm+itc", as BLIP); with "itc" a candidate keeps its first-stage
    similarity (the dual encoder alone; `pair_logits` is not read). Every other entry is -inf, below them all."""
    if rescore not in RESCORE_RULES:
        raise ValueError(f"unknown re-scoring rule {rescore!r}; choose one of {RESCORE_RULES}")
    with_similarity, with_logit = rescore != "itm", rescore != "itc"

    def score(text: int, image: int, similarity: float) -> float:
        return (pair_logits[(text, image)] if with_logit else 0.0) + (similarity if with_similarity else 0.0)

    t2i = torch.full((num_texts, num_images), float("-inf"), dtype=torch.float64)
    i2t = torch.full((num_images, num_texts), float("-inf"), dtype=torch.float64)
    for text, (images, sims) in enumerate(zip(candidates.t2i_index.tolist(), candidates.t2i_similarity.tolist(),
                                              strict=True)):
        for image, sim in zip(images, sims, strict=True):
            t2i[text, image] = score(text, image, sim)
    for image, (texts, sims) in enumerate(zip(candidates.i2t_index.tolist(), candidates.i2t_similarity.tolist(),
                                              strict=True)):
        for text, sim in zip(texts, sims, strict=True):
            i2t[image, text] = score(text, image, sim)
    return i2t, t2i
