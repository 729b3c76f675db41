"""The GPU path measured at the configs' batch sizes: the VQA base step at 64 per GPU and an end-to-end step at VCR's
image batch, bf16 and fp16, eager and compiled, ours and the peer (transformers' VisualBERT, bench/models.py).
`bench/gpu_check.sh` runs it and writes the table into bench/RESULTS.md; `--cpu-smoke` runs tiny shapes on CPU.

Ours runs as a training run with the GPU keys would: packed sequences padded to a multiple of 8
(TRAIN.PAD_TO_MULTIPLE_OF, default on a GPU) and, compiled, each BertLayer compiled (TRAIN.COMPILE_LAYERS); the peer is
compiled whole. Steps are timed by bench/train_step.py's Runner (AdamW fused, autocast, GradScaler for fp16).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import time

import torch

from bench import train_step
from bench.models import Setting
from common.atomic_write import write_json_atomic, write_text_atomic
from common.engine.flops import matmul_rate
from common.engine.gpu_path import compile_layers, set_pad_multiple

log = logging.getLogger("bench.gpu_step")
BASE = dict(hidden=768, layers=12, heads=12, ffn=3072)
TINY = dict(hidden=64, layers=2, heads=4, ffn=128)
# The VCR row: 4 images per GPU (cfgs/vcr/base_*: BATCH_IMAGES 4) of ~600 x 1067 pixels (SCALES 600, 1200; 800^2 has
# the same area), 15 boxes, a 56-token text: one text per image where VCR runs four (one per choice).
SETTINGS = {
    "gpu": {"vqa (batch 64)": Setting("vqa", batch=64, **BASE),
            "vcr e2e (batch 4, 800 px)": Setting("e2e", batch=4, regions=15, image_size=800, text_len=56, **BASE)},
    "cpu-smoke": {"vqa (tiny)": Setting("vqa", batch=2, regions=4, **TINY),
                  "e2e (tiny)": Setting("e2e", batch=1, regions=1, image_size=32, resnet_layers=18, **TINY)},
}
MARK_START, MARK_END = "<!-- gpu_check:start -->", "<!-- gpu_check:end -->"


class GpuRunner(train_step.Runner):
    """Runner whose `ours` takes the GPU path: padding to 8 on CUDA, per-layer compile instead of a whole compile."""

    def __init__(self, which: str, setting: Setting, args: argparse.Namespace):
        compiled, args.compile = args.compile, args.compile and which == "peer"
        super().__init__(which, setting, args)
        args.compile = compiled
        if which == "ours":
            set_pad_multiple(self.model, 8 if self.device.type == "cuda" else 1)
            if compiled:
                compile_layers(self.model)


def run_variant(setting: Setting, dtype: str, compiled: bool, args: argparse.Namespace) -> list[dict]:
    argv = ["--device", args.device, "--dtype", dtype, "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--e2e-steps", str(args.steps)] + (["--compile"] if compiled else [])
    bench_args = train_step.parse_args(argv)
    runners = [GpuRunner(which, setting, bench_args) for which in ("ours", "peer")]
    for _ in range(bench_args.warmup):
        for runner in runners:
            runner.step(record=False)
    for _ in range(bench_args.steps):
        for runner in runners:
            runner.step()
    return [dict(runner.result(), dtype=dtype, compiled=compiled) for runner in runners]


def table(rows: list[dict], peaks: dict[str, float]) -> str:
    head = ("| setting | dtype | compiled | L | ours samples/s | peer samples/s | ours/peer | ours MFU | peer MFU | "
            "ours TFLOP/s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for key in dict.fromkeys((r["name"], r["dtype"], r["compiled"]) for r in rows):
        ours, peer = (next(r for r in rows if (r["name"], r["dtype"], r["compiled"]) == key and r["model"] == m)
                      for m in ("ours", "peer"))
        rate = {m: r["flops"] / r["step_s"] for m, r in (("ours", ours), ("peer", peer))}
        lines.append(f"| {key[0]} | {key[1]} | {'yes' if key[2] else 'no'} | {ours['seq_len']} | "
                     f"{ours['samples_per_s']:.2f} | {peer['samples_per_s']:.2f} | "
                     f"{ours['samples_per_s'] / peer['samples_per_s']:.2f}x | {rate['ours'] / peaks[key[1]]:.4f} | "
                     f"{rate['peer'] / peaks[key[1]]:.4f} | {rate['ours'] / 1e12:.4f} |")
    return "\n".join(lines)


def write_results(path: str, text: str) -> None:
    """Replace the block between the gpu_check markers in `path` (appended when absent), atomically."""
    old = open(path, encoding="utf-8").read() if os.path.isfile(path) else ""
    block = f"{MARK_START}\n{text}\n{MARK_END}"
    pattern = re.compile(re.escape(MARK_START) + ".*?" + re.escape(MARK_END), re.DOTALL)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + block + "\n"
    write_text_atomic(path, new)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on CPU (seconds): checks the script runs")
    p.add_argument("--results", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--dtypes", default="bf16,fp16")
    p.add_argument("--compile", default="no,yes", help="no, yes or both (no,yes)")
    p.add_argument("--json", default="", help="also write the rows to this file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.device = "cpu" if args.cpu_smoke else "cuda"
    if not args.cpu_smoke and not torch.cuda.is_available():
        raise SystemExit("bench/gpu_step.py: no CUDA device here; run `bench/gpu_check.sh --cpu-smoke` on CPU")
    device, dtypes = torch.device(args.device), args.dtypes.split(",")
    start, rows = time.time(), []
    dtype_of = {"bf16": torch.bfloat16, "fp16": torch.float16}
    sizes = (256,) if args.cpu_smoke else None
    peaks = {d: max(matmul_rate(device, dtype_of[d], sizes=sizes, repeats=2 if args.cpu_smoke else 5).values())
             for d in dtypes}
    for name, setting in SETTINGS["cpu-smoke" if args.cpu_smoke else "gpu"].items():
        for dtype in dtypes:
            for compiled in [c == "yes" for c in args.compile.split(",")]:
                for row in run_variant(setting, dtype, compiled, args):
                    rows.append(dict(row, name=name))
                    log.info("%s %s %s %s: %.1f samples/s", name, dtype, "compiled" if compiled else "eager",
                             row["model"], row["samples_per_s"])
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke: tiny shapes)"
    text = (f"GPU check (`bench/gpu_check.sh`{' --cpu-smoke' if args.cpu_smoke else ''}): {device_name}, torch "
            f"{torch.__version__}, {args.steps} timed steps after {args.warmup} warm-up, wall clock, "
            f"{time.time() - start:.0f} s in all. MFU against the measured matmul rate: "
            + ", ".join(f"{d} {v / 1e12:.1f} TFLOP/s" for d, v in peaks.items()) + ".\n\n" + table(rows, peaks))
    write_results(args.results, text)
    log.info("\n%s\n(written to %s)", text, args.results)
    if args.json:
        write_json_atomic(args.json, {"peaks": peaks, "rows": rows}, indent=1)


if __name__ == "__main__":
    main()
