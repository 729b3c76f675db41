"""Peak CPU memory of one VL-BERT training step with and without activation checkpointing (GRADIENT_CHECKPOINTING).

Usage: `python bench/memory.py [--size base|tiny --batch 8 --tokens 60]`; each mode runs in a fresh process and the
step's peak is the rise of the process high-water mark (ru_maxrss) over the mark after building model and batch.
"""
import argparse
import json
import logging
import os
import resource
import subprocess
import sys

import torch
from easydict import EasyDict

from common.model.vlbert import VisualLinguisticBert

log = logging.getLogger("bench.memory")
SIZES = {"base": dict(hidden=768, layers=12, heads=12, ffn=3072), "tiny": dict(hidden=64, layers=2, heads=4, ffn=128)}


def vlbert_config(size: str) -> EasyDict:
    s = SIZES[size]
    return EasyDict(
        vocab_size=30522, hidden_size=s["hidden"], num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
        intermediate_size=s["ffn"], hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        max_position_embeddings=512, type_vocab_size=3, initializer_range=0.02, visual_size=s["hidden"],
        visual_ln=True, visual_scale_text_init=0.0, visual_scale_object_init=0.0, with_pooler=True,
    )


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def one_step(size: str, batch: int, tokens: int, checkpointing: bool) -> dict:
    """Build model and batch, run forward + backward once; packed length = text + objects + [END] = `tokens`."""
    torch.manual_seed(0)
    cfg = vlbert_config(size)
    model = VisualLinguisticBert(cfg).train()
    model.encoder.gradient_checkpointing = checkpointing
    n_text = tokens * 2 // 3
    n_obj = tokens - n_text - 1
    h = cfg.hidden_size
    inputs = dict(
        text_input_ids=torch.randint(1, cfg.vocab_size, (batch, n_text)),
        text_token_type_ids=torch.zeros(batch, n_text, dtype=torch.long),
        text_visual_embeddings=torch.randn(batch, n_text, h),
        text_mask=torch.ones(batch, n_text, dtype=torch.bool),
        object_vl_embeddings=torch.randn(batch, n_obj, 2 * h),
        object_mask=torch.ones(batch, n_obj, dtype=torch.bool),
    )
    for p in model.parameters():  # gradient buffers exist before the mark, as in any step after the first
        p.grad = torch.zeros_like(p)
    before = max_rss_mib()
    encoded, pooled = model(**inputs, output_all_encoded_layers=False)
    (encoded[-1].square().mean() + pooled.sum()).backward()
    return {"checkpointing": checkpointing, "baseline_mib": before, "step_peak_mib": max_rss_mib() - before}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", choices=sorted(SIZES), default="base")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, default=60)
    p.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(one_step(args.size, args.batch, args.tokens, args.child == "on")))
        return []
    rows = []
    for mode in ("off", "on"):
        cmd = [sys.executable, os.path.abspath(__file__), "--size", args.size, "--batch", str(args.batch),
               "--tokens", str(args.tokens), "--child", mode]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    log.info("VL-BERT %s, batch %d, %d tokens, fp32 CPU", args.size, args.batch, args.tokens)
    log.info("%-14s %18s %18s", "checkpointing", "step peak (MiB)", "baseline (MiB)")
    for r in rows:
        log.info("%-14s %18.0f %18.0f", "on" if r["checkpointing"] else "off", r["step_peak_mib"], r["baseline_mib"])
    return rows


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
