"""Image-text retrieval of one Karpathy image set with a trained checkpoint, on every process: embeddings of every
image and caption (first stage), the matching head over the chosen pairs (second stage), R@1/5/10 both ways and the
result file on rank 0. `retrieval/test.py` is its command line; `--do-test` runs it after training."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from common.config_node import ConfigNode
from common.data.loader import make_inference_loader
from common.data.transforms import build_transform
from common.engine import dist
from common.engine.dist import DistEnv
from common.engine.evaluate import load_module_for_inference, predict
from retrieval.dataset import ImageItems, KarpathySplit, PairItems, TextItems
from retrieval.predictions import write_retrieval_result
from retrieval.ranking import retrieval_metrics
from retrieval.task import TASK, karpathy_split
from retrieval.two_stage import final_scores, first_stage

log = logging.getLogger(__name__)

DEFAULT_K = 128  # ALBEF's k for Flickr30K (256 for COCO)
DEFAULT_CHUNK = 1024


@dataclass(frozen=True)
class RetrievalResult:
    """What rank 0 keeps of a retrieval run: the file written, the metrics and the final score matrices."""

    path: str
    metrics: dict[str, float]
    scores_i2t: Tensor  # [I, T]
    scores_t2i: Tensor  # [T, I]


def outputs_on_every_rank(module: nn.Module, dataset, cfg: ConfigNode, env: DistEnv, device: torch.device,
                          key: str) -> Tensor | None:
    """Output `key` of every item, stacked in dataset order, on every rank (inference sharded over the ranks)."""
    loader = make_inference_loader(dataset, cfg, "test", env)
    outputs = predict(module, loader, device, show_progress=env.is_main)
    stacked = None if outputs is None else torch.stack([o[key] for o in outputs])
    return dist.broadcast_object(stacked)


def score_pairs(module: nn.Module, split: KarpathySplit, cfg: ConfigNode, env: DistEnv, device: torch.device,
                pairs: list[tuple[int, int]]) -> dict[tuple[int, int], float] | None:
    """Matching logit of every (caption, image) pair, on rank 0 (None elsewhere)."""
    dataset = PairItems(split, build_transform(cfg, "test"), pairs)
    outputs = predict(module, make_inference_loader(dataset, cfg, "test", env), device, show_progress=env.is_main)
    if outputs is None:
        return None
    return {pairs[o["index"]]: float(o["match_logits"]) for o in outputs}


def run_retrieval(cfg: ConfigNode, ckpt_path: str, env: DistEnv, result_dir: str, result_name: str,
                  k: int = DEFAULT_K, chunk: int = DEFAULT_CHUNK, rescore: str = "itm+itc",
                  device: torch.device | None = None) -> RetrievalResult | None:
    """Retrieval over DATASET.TEST_IMAGE_SET of `cfg` (call it on every rank); the result on rank 0."""
    device = device or env.device
    split = karpathy_split(cfg, "test")
    log.info("retrieval: %d images, %d captions of %s, k %d, %d process(es)", len(split.images), len(split.texts),
             cfg.DATASET.TEST_IMAGE_SET, k, env.world_size)
    module = load_module_for_inference(TASK, cfg, ckpt_path, device)
    images = outputs_on_every_rank(module, ImageItems(split, build_transform(cfg, "test")), cfg, env, device,
                                   "image_embedding")
    texts = outputs_on_every_rank(module, TextItems(split), cfg, env, device, "text_embedding")
    candidates = first_stage(texts, images, k, chunk)
    logits = {}
    if rescore != "itc":
        pairs = candidates.pairs()
        log.info("retrieval: the matching head re-scores %d (caption, image) pairs", len(pairs))
        logits = score_pairs(module, split, cfg, env, device, pairs)
    if not env.is_main:  # the pairs' logits (and the result) live on rank 0
        return None
    scores_i2t, scores_t2i = final_scores(candidates, logits, len(split.texts), len(split.images), rescore)
    metrics = retrieval_metrics(scores_i2t, scores_t2i, split.text_image)
    path = write_retrieval_result(result_dir, result_name, cfg.DATASET.TEST_IMAGE_SET, split, metrics,
                                  scores_i2t, scores_t2i, {"k": k, "rescore": rescore, "checkpoint": ckpt_path})
    log.info("retrieval %s: %s (%s)", cfg.DATASET.TEST_IMAGE_SET,
             ", ".join(f"{name} {value:.2f}" for name, value in metrics.items()), path)
    return RetrievalResult(path, metrics, scores_i2t, scores_t2i)
