"""Training-step throughput, MFU and peak memory of VL-BERT (VQA, precomputed regions and end-to-end ResNet) next to
transformers' VisualBertModel on the same inputs. Usage: `python bench/train_step.py [--device cuda --dtype bf16]`.
"""
import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from bench.models import Setting, build, make_batch, model_flops
from common.atomic_write import write_json_atomic
from common.engine.flops import matmul_rate

log = logging.getLogger("bench.train_step")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SIZES = {  # "tiny" only checks that the script runs
    "base": dict(hidden=768, layers=12, heads=12, ffn=3072),
    "tiny": dict(hidden=64, layers=2, heads=4, ffn=128, resnet_layers=18, regions=4, image_size=64),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="autocast dtype (fp32 = no autocast)")
    p.add_argument("--steps", type=int, default=5, help="timed steps (the median is reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = the cores this process may use")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", choices=sorted(SIZES), default="base")
    p.add_argument("--settings", default="vqa,e2e", help="comma list of vqa (36 regions), e2e (ResNet on images)")
    p.add_argument("--models", default="ours,peer")
    p.add_argument("--e2e-boxes", type=int, default=10, help="boxes per image in the e2e setting")
    p.add_argument("--e2e-steps", type=int, default=3, help="timed steps in the e2e setting")
    p.add_argument("--optimizer", choices=("auto", "foreach", "fused", "forloop", "original"), default="auto",
                   help="AdamW flavour: auto = fused (one pass per tensor, CPU and CUDA); original = OriginalAdamW")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (TRAIN.COMPILE)")
    p.add_argument("--channels-last", action="store_true", help="ResNet in channels-last memory format")
    p.add_argument("--no-onednn-linear", action="store_true", help="NETWORK.CPU_ONEDNN_LINEAR false for ours")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="step time: wall clock, or process CPU time / threads (CPU only; for a machine shared with "
                        "other jobs, together with OMP_WAIT_POLICY=PASSIVE)")
    p.add_argument("--json", default="", help="also write the results to this file")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def make_setting(name: str, args: argparse.Namespace) -> Setting:
    kwargs = dict(SIZES[args.size])
    if name == "e2e":
        kwargs["regions"] = args.e2e_boxes
    if name not in ("vqa", "e2e"):
        raise SystemExit(f"--settings: unknown setting {name!r} (expected vqa or e2e)")
    return Setting(name=name, batch=args.batch, **kwargs)


def make_optimizer(model: torch.nn.Module, flavour: str, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if flavour == "original":
        from common.engine.optim import OriginalAdamW

        return OriginalAdamW(params, lr=1e-5, eps=1e-6, weight_decay=1e-4)
    if flavour == "auto":
        flavour = "fused"
    kind = {"fused": {"fused": True}, "foreach": {"foreach": True}, "forloop": {"foreach": False}}[flavour]
    return torch.optim.AdamW(params, lr=1e-5, eps=1e-6, weight_decay=1e-4, **kind)


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Runner:
    """One model, its optimizer and inputs for one setting; `step()` is one timed training step."""

    def __init__(self, which: str, setting: Setting, args: argparse.Namespace):
        self.device = device = torch.device(args.device)
        self.which, self.setting = which, setting
        torch.manual_seed(0)
        self.model = build(which, setting, channels_last=args.channels_last,
                           onednn_linear=not args.no_onednn_linear).to(device).train()
        self.batch = make_batch(setting, device)
        self.flops = model_flops(self.model, self.batch)
        self.optimizer = make_optimizer(self.model, args.optimizer, device)
        self.forward = torch.compile(self.model) if args.compile else self.model
        self.dtype = DTYPES[args.dtype]
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.threads = torch.get_num_threads()
        self.times: list[float] = []
        self.cpu_times: list[float] = []

    def step(self, record: bool = True) -> None:
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            loss = self.forward(self.batch)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if record:
            self.times.append(time.perf_counter() - start)
            self.cpu_times.append((time.process_time() - cpu_start) / self.threads)

    def result(self, clock: str = "wall") -> dict:
        times = self.cpu_times if clock == "cpu" else self.times
        median = statistics.median(times)
        return dict(setting=self.setting.name, model=self.which, seq_len=self.setting.seq_len, step_s=median,
                    clock=clock, times=times, wall_times=self.times, samples_per_s=self.setting.batch / median,
                    wall_samples_per_s=self.setting.batch / statistics.median(self.times), flops=self.flops,
                    params=sum(p.numel() for p in self.model.parameters()))


def measure_speed(setting: Setting, models: list[str], args: argparse.Namespace) -> list[dict]:
    """Build every model, then alternate their steps, so that a load change on the machine hits all alike."""
    runners = [Runner(which, setting, args) for which in models]
    for _ in range(args.warmup):
        for runner in runners:
            runner.step(record=False)
    for _ in range(args.e2e_steps if setting.end2end else args.steps):
        for runner in runners:
            runner.step()
    return [runner.result(args.clock) for runner in runners]


def measure_memory(args: argparse.Namespace) -> dict:
    """In a fresh process: peak memory of two training steps (CUDA: max_memory_allocated; CPU: peak RSS rise)."""
    setting_name, which = args.worker.split(":")
    runner = Runner(which, make_setting(setting_name, args), args)
    if runner.device.type == "cuda":
        torch.cuda.synchronize(runner.device)
        torch.cuda.reset_peak_memory_stats(runner.device)
    rss_before = current_rss()
    for _ in range(2):
        runner.step(record=False)
    if runner.device.type == "cuda":
        return dict(peak_bytes=torch.cuda.max_memory_allocated(runner.device))
    return dict(peak_bytes=max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before, 0))


def spawn(argv: list[str], spec: str) -> dict:
    """Run `measure_memory` for one model in a fresh process (clean allocator and peak counters)."""
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--worker", spec]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark worker {spec} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def format_table(results: list[dict], peak_rate: float, device: torch.device) -> str:
    mem = "max_memory_allocated" if device.type == "cuda" else "peak RSS over loaded model"
    head = (f"| setting | L | ours samples/s | peer samples/s | ours/peer | ours MFU | peer MFU | "
            f"ours GFLOP/step | ours {mem} MiB | peer {mem} MiB |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for setting in dict.fromkeys(r["setting"] for r in results):
        by = {r["model"]: r for r in results if r["setting"] == setting}
        ours, peer = by.get("ours"), by.get("peer")

        def cell(r, key, fmt):
            return fmt.format(r[key]) if r else "-"

        mfu = {k: (r["flops"] / r["step_s"] / peak_rate if r else None) for k, r in by.items()}
        ratio = f"{ours['samples_per_s'] / peer['samples_per_s']:.2f}x" if ours and peer else "-"
        rows.append(
            f"| {setting} | {(ours or peer)['seq_len']} | {cell(ours, 'samples_per_s', '{:.2f}')} | "
            f"{cell(peer, 'samples_per_s', '{:.2f}')} | {ratio} | "
            f"{'%.3f' % mfu['ours'] if ours else '-'} | {'%.3f' % mfu['peer'] if peer else '-'} | "
            f"{ours['flops'] / 1e9 if ours else float('nan'):.1f} | "
            f"{ours['peak_bytes'] / 2**20 if ours else float('nan'):.0f} | "
            f"{peer['peak_bytes'] / 2**20 if peer else float('nan'):.0f} |")
    return "\n".join(rows)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    if args.worker:
        logging.basicConfig(level=logging.WARNING)
        print("RESULT " + json.dumps(measure_memory(args)), flush=True)  # parsed by spawn()
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device(args.device)
    if args.clock == "cpu" and device.type != "cpu":
        raise SystemExit("--clock cpu measures CPU steps; use --clock wall with --device " + args.device)
    log.info("torch %s, %d threads, device %s, dtype %s, batch %d, load average %s", torch.__version__, threads,
             device, args.dtype, args.batch, " ".join(f"{x:.2f}" for x in os.getloadavg()))
    rates = matmul_rate(device, DTYPES[args.dtype], clock=args.clock)
    peak_rate = max(rates.values())
    log.info("measured matmul rate (%s): %s", args.dtype,
             ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in rates.items()))
    results = []
    for name in args.settings.split(","):
        setting = make_setting(name, args)
        for result in measure_speed(setting, args.models.split(","), args):
            result.update(spawn(argv, f"{name}:{result['model']}"))
            log.info("%s/%s: %.2f samples/s (%s clock; median step %.3f s of %s; wall clock %.2f samples/s), "
                     "peak %.0f MiB", name, result["model"], result["samples_per_s"], args.clock, result["step_s"],
                     ", ".join(f"{t:.3f}" for t in result["times"]), result["wall_samples_per_s"],
                     result["peak_bytes"] / 2**20)
            results.append(result)
    log.info("load average at the end: %s", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    table = format_table(results, peak_rate, device)
    log.info("\nmatmul rate %.1f GFLOP/s (%s, best kernel); %s clock; MFU = model FLOPs per step / step time / "
             "matmul rate\n%s", peak_rate / 1e9, args.dtype, args.clock, table)
    if args.json:
        write_json_atomic(args.json, {"matmul_flops_per_s": rates, "args": vars(args), "results": results}, indent=1)


if __name__ == "__main__":
    main()
