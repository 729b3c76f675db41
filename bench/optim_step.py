"""Optimizer step alone: OriginalAdamW (loop reference, foreach, fused) next to torch's fused AdamW, on a stack of
Linear layers shaped like a BERT encoder. Usage: `python bench/optim_step.py [--sizes minilm,base] [--clock cpu]`.
"""


import argparse
import statistics
import time

import torch
from torch import nn

from common.engine.optim import OriginalAdamW, build_param_groups

SIZES = {  # (vocab, hidden, layers, ffn)
    "tiny": (1000, 32, 2, 128),  # only checks that the script runs
    "minilm": (30522, 384, 6, 1536),
    "base": (30522, 768, 12, 3072),
}
VARIANTS = ("loop", "foreach", "auto", "torch_fused")


def encoder_like(vocab: int, hidden: int, layers: int, ffn: int) -> nn.Module:
    """Embedding [vocab, hidden] + per layer Q, K, V, O [hidden, hidden], FFN in/out, two LayerNorms."""
    def layer() -> nn.Module:
        return nn.ModuleDict({
            **{name: nn.Linear(hidden, hidden) for name in ("query", "key", "value", "output")},
            "ffn_in": nn.Linear(hidden, ffn), "ffn_out": nn.Linear(ffn, hidden),
            "attention_norm": nn.LayerNorm(hidden), "output_norm": nn.LayerNorm(hidden),
        })
    stack = nn.ModuleList(layer() for _ in range(layers))
    return nn.ModuleDict({"embed": nn.Embedding(vocab, hidden), "layers": stack})


def build(variant: str, module: nn.Module) -> torch.optim.Optimizer:
    """Two groups (decay / no decay for biases and norms) as build_optimizer makes with NO_DECAY_NORM_BIAS."""
    groups = build_param_groups(module, base_lr=1e-4, weight_decay=1e-4, no_decay_norm_bias=True)
    if variant == "torch_fused":
        return torch.optim.AdamW(groups, eps=1e-6, fused=True)
    return OriginalAdamW(groups, eps=1e-6, impl=variant)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", default="minilm,base")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--steps", type=int, default=7, help="timed steps per variant (the median is reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall clock, or process CPU time / torch threads (CPU only; for a shared machine, together "
                        "with OMP_WAIT_POLICY=PASSIVE)")
    return p.parse_args(argv)


def measure(size: str, variants: list[str], args: argparse.Namespace) -> dict[str, float]:
    """Median step time (ms) per variant; variants step in alternation so that load changes hit all alike."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    reference = encoder_like(*SIZES[size]).to(device)
    grads = [torch.randn_like(p) * 1e-3 for p in reference.parameters()]  # shared: the step only reads them
    runs = []
    for variant in variants:
        module = reference if not runs else encoder_like(*SIZES[size]).to(device)
        for param, grad in zip(module.parameters(), grads, strict=True):
            param.grad = grad
        runs.append((variant, build(variant, module), []))
    threads = torch.get_num_threads()
    for i in range(args.warmup + args.steps):
        for _, optimizer, times in runs:
            start, cpu_start = time.perf_counter(), time.process_time()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            cpu_s, wall_s = (time.process_time() - cpu_start) / threads, time.perf_counter() - start
            elapsed = cpu_s if args.clock == "cpu" else wall_s
            if i >= args.warmup:
                times.append(elapsed * 1e3)
    params = sum(p.numel() for p in reference.parameters())
    print(f"{size}: {params / 1e6:.1f} M parameters in {len(grads)} tensors, {args.clock} clock, "
          f"{threads} threads, median of {args.steps} steps")
    return {variant: statistics.median(times) for variant, _, times in runs}


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.clock == "cpu" and args.device != "cpu":
        raise SystemExit("--clock cpu measures CPU steps; use --clock wall with --device " + args.device)
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"--variants: unknown {sorted(unknown)} (expected some of {', '.join(VARIANTS)})")
    for size in args.sizes.split(","):
        if size not in SIZES:
            raise SystemExit(f"--sizes: unknown size {size!r} (expected some of {', '.join(SIZES)})")
        medians = measure(size, variants, args)
        base = medians.get("loop")
        for variant, ms in medians.items():
            speedup = f"  ({base / ms:.1f}x the loop)" if base else ""
            print(f"  {variant:12s} {ms:9.2f} ms{speedup}")


if __name__ == "__main__":
    main()
