"""How many GPU-hours each paper config needs, before you start: training FLOPs per sample (the engine's counter,
common/engine/flops.py, on the config's model at stated sequence and image sizes) x samples x epochs, divided by a
per-device rate; the table goes into cfgs/README.md.

    python scripts/time_to_train.py            # rewrite the table in cfgs/README.md
    python scripts/time_to_train.py --print    # print it only

The rate of a device is its measured bf16 matmul rate x an MFU. For an H100 the MFU is the bench target (0.40 on
the VQA base step at batch 64): an estimate until `bench/gpu_check.sh` measures it (MEASURED_MFU then replaces it).
Steps where data loading, not compute, limits the rate are not modelled.
"""
from __future__ import annotations

import argparse
import os
import re
from typing import NamedTuple

import torch

from common.atomic_write import write_text_atomic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "cfgs", "README.md")
MARK_START, MARK_END = "<!-- time_to_train:start -->", "<!-- time_to_train:end -->"
ROI_SIZE = 14  # RoIAlign output of FastRCNN (common/model/fast_rcnn.py)

# Device: (bf16 matmul FLOP/s measured by bench/train_step.py's probe, MFU, where the MFU comes from).
H100_MATMUL = 769e12  # nvidia-h100-x1, torch.mm bf16 (bench/RESULTS.md, GPU table)
TARGET_MFU = 0.40
MEASURED_MFU: dict[str, float] = {}  # workload kind -> bf16 MFU measured by bench/gpu_check.sh (none yet)


class Workload(NamedTuple):
    """What one training item of a config costs: `sequences` packed sequences of `text` tokens + `boxes` boxes
    (the whole-image box included) + [END], padded to the batch's longest; end-to-end: one image of `image` (h, w)
    pixels; multitask pre-training: plus one text-only sequence of `text_only` tokens per caption item."""

    dataset: str
    samples: int  # training items per epoch
    text: int
    boxes: int
    sequences: int = 1
    image: tuple[int, int] | None = None
    text_only: int = 0


VQA = Workload("VQA v2 train2014+val2014 questions (443,757 + 214,354)", 658_111, text=24, boxes=101)
VCR = Workload("VCR train questions", 212_923, text=64, boxes=21, sequences=4, image=(600, 1067))
REFCOCO_GT = Workload("RefCOCO+ train expressions (UNC)", 120_624, text=16, boxes=26, image=(600, 800))
REFCOCO_DET = REFCOCO_GT._replace(boxes=101)
CC = "Conceptual Captions train pairs"
PRETRAIN_PREC = Workload(CC, 3_318_333, text=32, boxes=101, text_only=64)
PRETRAIN_E2E = PRETRAIN_PREC._replace(image=(600, 1000))
CONFIGS = {
    "pretrain/base_prec_4x16G_fp32.yaml": PRETRAIN_PREC, "pretrain/base_e2e_16x16G_fp16.yaml": PRETRAIN_E2E,
    "pretrain/base_prec_withouttextonly_4x16G_fp32.yaml": PRETRAIN_PREC._replace(text_only=0),
    "pretrain/large_prec_4x16G_fp16.yaml": PRETRAIN_PREC, "pretrain/large_e2e_16x16G_fp16.yaml": PRETRAIN_E2E,
    "vqa/base_4x16G_fp32.yaml": VQA, "vqa/large_4x16G_fp32.yaml": VQA,
    "vcr/base_q2a_4x16G_fp32.yaml": VCR, "vcr/base_qa2r_4x16G_fp32.yaml": VCR,
    "vcr/large_q2a_4x16G_fp16.yaml": VCR, "vcr/large_qa2r_4x16G_fp16.yaml": VCR,
    "vcr/large_q2a_16x16G_fp16.yaml": VCR, "vcr/large_qa2r_16x16G_fp16.yaml": VCR,
    "refcoco/base_gt_boxes_4x16G.yaml": REFCOCO_GT, "refcoco/base_detected_regions_4x16G.yaml": REFCOCO_DET,
    "refcoco/large_gt_boxes_4x16G.yaml": REFCOCO_GT, "refcoco/large_detected_regions_4x16G.yaml": REFCOCO_DET,
}


def load(config: str):
    import importlib

    from common.config import load_config

    task = config.split("/")[0]
    defaults = getattr(importlib.import_module(f"{task}.config"), f"add_{task}_defaults")
    return load_config(os.path.join(REPO, "cfgs", config), add_task_defaults=defaults)


def front_end_flops(cfg, image: tuple[int, int], boxes: int) -> float:
    """Training FLOPs of FastRCNN for one image: the ResNet trunk (C1-C4) on the image and the C5 head on `boxes`
    RoIs, counted on the meta device (shapes only) with the config's frozen stages."""
    from common.engine.flops import count_step_flops
    from common.model.fast_rcnn import FastRCNN

    with torch.device("meta"):
        net = FastRCNN.from_config(cfg).train()
    image_flops = count_step_flops(net.backbone, lambda: net.backbone(torch.zeros(1, 3, *image, device="meta")))
    channels = net.feature_dim // 2  # the C4 map feeding RoIAlign has half the channels of C5
    rois = torch.zeros(boxes, channels, ROI_SIZE, ROI_SIZE, device="meta",
                       requires_grad=any(p.requires_grad for p in net.backbone.parameters()))
    head = net.roi_head_feature_extractor
    return image_flops + count_step_flops(head, lambda: head(rois))


def item_flops(config: str, work: Workload) -> float:
    """Training FLOPs of one item (forward + backward), transformer and front-end."""
    from common.engine.flops import transformer_flops

    cfg = load(config)
    v = cfg.NETWORK.VLBERT
    size = (int(v.hidden_size), int(v.intermediate_size), int(v.num_hidden_layers))
    total = transformer_flops(work.sequences, work.text + work.boxes + 1, *size)
    if work.text_only:
        total += transformer_flops(1, work.text_only, *size)
    if work.image is not None and not bool(cfg.NETWORK.IMAGE_FEAT_PRECOMPUTED):
        total += front_end_flops(cfg, work.image, work.boxes)
    return total


def gpu_hours(flops_per_item: float, items: int, epochs: float, rate: float) -> float:
    return flops_per_item * items * epochs / rate / 3600


def rows() -> list[dict]:
    out = []
    for config, work in CONFIGS.items():
        cfg = load(config)
        kind = config.split("/")[0]
        mfu = MEASURED_MFU.get(kind, TARGET_MFU)
        flops = item_flops(config, work)
        gpus = int(re.search(r"_(\d+)x\d+G", config).group(1))
        hours = gpu_hours(flops, work.samples, float(cfg.TRAIN.END_EPOCH), H100_MATMUL * mfu)
        out.append(dict(config=config, dataset=work.dataset, samples=work.samples, epochs=int(cfg.TRAIN.END_EPOCH),
                        length=work.text + work.boxes + 1, flops=flops, mfu=mfu, measured=kind in MEASURED_MFU,
                        hours=hours, gpus=gpus))
    return out


def table(entries: list[dict]) -> str:
    # config names without backticks: tests/test_cfgs_readme.py reads the rows of the first table by them
    lines = ["| config | items per epoch | epochs | packed length | TFLOP per item | H100 GPU-hours | "
             "wall hours on the config's GPU count |", "|---|---|---|---|---|---|---|"]
    for r in entries:
        status = "measured" if r["measured"] else "estimate"
        lines.append(f"| {r['config']} | {r['samples']:,} ({r['dataset']}) | {r['epochs']} | {r['length']} | "
                     f"{r['flops'] / 1e12:.3f} | {r['hours']:.3g} ({status}, MFU {r['mfu']:.2f}) | "
                     f"{r['hours'] / r['gpus']:.3g} on {r['gpus']} |")
    return "\n".join(lines)


def write_table(text: str, path: str = README) -> None:
    with open(path, encoding="utf-8") as f:
        old = f.read()
    block = f"{MARK_START}\n{text}\n{MARK_END}"
    if MARK_START not in old:
        raise SystemExit(f"{path}: no {MARK_START} ... {MARK_END} block to replace")
    new = re.sub(re.escape(MARK_START) + ".*?" + re.escape(MARK_END), lambda _: block, old, flags=re.DOTALL)
    write_text_atomic(path, new)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--print", action="store_true", help="print the table, do not touch cfgs/README.md")
    args = parser.parse_args(argv)
    text = table(rows())
    print(text)
    if not args.print:
        write_table(text)


if __name__ == "__main__":
    main()
