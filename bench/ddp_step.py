"""DDP step time with `find_unused_parameters=True` (the old default), False (what TRAIN.FIND_UNUSED_PARAMETERS auto
picks when every parameter gets a gradient) and `static_graph=True`, in 2 gloo processes on CPU.

Usage: python bench/ddp_step.py [--steps 12 --warmup 3 --repeats 2 --batch 8]
The model is the toy VQA config's (minilm size: 6 layers, hidden 384, random weights) on the toy world; each
variant runs in fresh processes, the variants alternate, and each step is timed by wall clock and by process CPU
time / threads (steady under other load, see bench/RESULTS.md "Clock").
"""
import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

log = logging.getLogger("bench.ddp_step")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {"find_unused": {"find_unused_parameters": True}, "plain": {"find_unused_parameters": False},
            "static_graph": {"find_unused_parameters": False, "static_graph": True}}


def child(variant: str, world: str, steps: int, warmup: int, batch_size: int) -> dict:
    from common.config import load_config
    from common.data.loader import build_loader
    from common.engine import dist
    from common.engine.amp import MixedPrecision
    from common.engine.optim import build_optimizer
    from common.engine.trainer import move_to_device, train_step
    from vqa.task import TASK

    env = dist.setup()
    coco = os.path.join(world, "coco")
    cfg = load_config(os.path.join(ROOT, "cfgs/vqa/toy_cpu.yaml"), [
        "DATASET.DATASET_PATH", coco, "DATASET.ANSWER_VOCAB_FILE", os.path.join(coco, "vqa", "answers_vqa.txt"),
        "NETWORK.BERT_MODEL_NAME", os.path.join(world, "vocab_only"), "TRAIN.BATCH_IMAGES", str(batch_size)],
        add_task_defaults=TASK.add_defaults)
    torch.manual_seed(0)
    module = TASK.build_module(cfg)
    optimizer = build_optimizer(cfg, module, env.world_size)
    model = nn.parallel.DistributedDataParallel(module, **VARIANTS[variant])
    amp = MixedPrecision.from_config(cfg, env.device)
    batches = [move_to_device(b, env.device) for _, b in zip(range(2), build_loader(TASK, cfg, "train", env),
                                                              strict=False)]
    wall, cpu = [], []
    for step in range(warmup + steps):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        train_step(model, batches, optimizer, amp, 1.0, [], env.device)  # 2 micro-batches: no_sync, then sync
        amp.step(optimizer)
        if step >= warmup:
            wall.append(time.perf_counter() - start_wall)
            cpu.append((time.process_time() - start_cpu) / torch.get_num_threads())
    result = {"wall": statistics.median(wall), "cpu": statistics.median(cpu)}
    gathered = dist.all_gather_object(result)
    dist.teardown()
    return {k: max(r[k] for r in gathered) for k in result}


def launch(variant: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.abspath(__file__), "--child", variant, "--world", args.world, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch", str(args.batch)]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:  # reported in the table (static_graph refuses no_sync accumulation)
        errors = [line for line in proc.stderr.splitlines() if "Error" in line and "[rank" in line]
        log.error("%s failed:\n%s", variant, proc.stderr[-3000:])
        return {"failed": errors[0][:160] if errors else f"exit status {proc.returncode}"}
    return json.loads(lines[-1])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--world", default="/tmp/vlbert_memory_world")
    p.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.world, args.steps, args.warmup, args.batch)))
        return {}
    from bench.memory_parallel import make_world

    make_world(args.world)
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for _ in range(args.repeats):
        for variant in VARIANTS:
            runs[variant].append(launch(variant, args))
    log.info("| DDP setting | step wall s (per run) | step CPU s (per run) |")
    log.info("|---|---|---|")
    for variant, found in runs.items():
        if any("failed" in r for r in found):
            log.info("| %s | failed: %s | - |", VARIANTS[variant], next(r["failed"] for r in found if "failed" in r))
            continue
        log.info("| %s | %s | %s |", VARIANTS[variant], ", ".join(f"{r['wall']:.3f}" for r in found),
                 ", ".join(f"{r['cpu']:.3f}" for r in found))
    return runs


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
