"""Dump VL-BERT attention maps of the val set: `save_dir/attention_probs/{image_id}.npy`, [layers, heads, L, L].

python pretrain/vis_attention_maps.py --cfg cfgs/pretrain/vis_attention_maps_coco.yaml --save-dir ./vl-bert_viz
"""
import argparse
import logging
import os
import re

import numpy as np
import torch

from common.atomic_write import open_atomic
from common.config import load_config
from common.data.loader import make_loader
from common.engine import dist
from common.model.pretrained import load_partial_pretrain
from pretrain.config import add_pretrain_defaults
from pretrain.module import ResNetVLBERTForAttentionVis
from pretrain.task import build_pretrain_dataset

log = logging.getLogger("pretrain.vis_attention_maps")


def sample_name(batch: dict, row: int, dataset) -> str:
    """COCO image id, else the stem of a Conceptual Captions image path, else the dataset index."""
    if "image_id" in batch:
        return str(int(batch["image_id"][row]))
    index = int(batch["index"][row])
    for attr in ("image_paths", "images"):
        paths = getattr(dataset, attr, None)
        if paths is not None and index < len(paths) and isinstance(paths[index], str):
            return re.sub(r"\.[A-Za-z]+$", "", os.path.basename(paths[index]))
    return str(index)


@torch.no_grad()
def dump_attention(module, loader, dataset, out_dir: str, device) -> int:
    """Write one [layers, heads, L_i, L_i] array per sample (cut to its own text + boxes + [END]); returns count."""
    os.makedirs(out_dir, exist_ok=True)
    count = 0
    for batch in loader:
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        out = module(batch)
        lengths = out["text_mask"].sum(1) + out["object_mask"].sum(1) + 1
        for row in range(out["attention_probs"].shape[0]):
            n = int(lengths[row])
            probs = out["attention_probs"][row, :, :, :n, :n].float().cpu().numpy()
            with open_atomic(os.path.join(out_dir, f"{sample_name(batch, row, dataset)}.npy"), "wb") as handle:
                np.save(handle, probs)
            count += 1
    return count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--save-dir", required=True)
    parser.add_argument("--dist", action="store_true", help="one process per GPU (torchrun / launcher env)")
    parser.add_argument("--slurm", action="store_true", help="read rank and world size from SLURM variables")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    opts = args.opts[1:] if args.opts[:1] == ["--"] else args.opts
    cfg = load_config(args.cfg, opts, add_task_defaults=add_pretrain_defaults)
    env = dist.setup(distributed=args.dist or None, slurm=args.slurm)
    module = ResNetVLBERTForAttentionVis.from_config(cfg)
    if cfg.NETWORK.PARTIAL_PRETRAIN:
        load_partial_pretrain(module, cfg.NETWORK.PARTIAL_PRETRAIN, cfg.NETWORK.PARTIAL_PRETRAIN_PREFIX_CHANGES)
    module.to(env.device).eval()
    dataset = build_pretrain_dataset(cfg, "val")
    loader = make_loader(dataset, cfg, "val", env)
    count = dump_attention(module, loader, dataset, os.path.join(args.save_dir, "attention_probs"), env.device)
    log.info("rank %d: wrote %d attention maps to %s", env.rank, count, os.path.join(args.save_dir, "attention_probs"))
    dist.teardown()
    return count


if __name__ == "__main__":
    main()
