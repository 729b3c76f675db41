"""Resident memory of DataLoader workers reading a Conceptual-Captions-size index: the former Python list of dicts
against the packed numpy columns that `read_caption_index` builds now (copy-on-access, pytorch/pytorch#13246).

Usage: `python bench/data_memory.py [--records 3300000] [--reads 10000] [--workers 2] [--file /tmp/cc_index.json]`.
Writes a synthetic `train_frcnn.json` once (reused when present), then, for each index kind in a fresh process:
builds the index, forks `--workers` DataLoader workers that each read `--reads` random records as the dataset does,
and reports each worker's USS and RSS (psutil) at its first read and at its last, and their growth.
"""
import argparse
import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
import psutil
from torch.utils.data import DataLoader, Dataset

from common.atomic_write import open_atomic

log = logging.getLogger("bench.data_memory")
KINDS = ("list_of_dicts", "packed")
WORDS = ("a", "the", "man", "woman", "dog", "on", "in", "with", "red", "blue", "beach", "city", "street", "at",
         "sunset", "of", "young", "old", "playing", "sitting", "people", "view", "from", "above", "tree", "car")


def write_index(path: str, records: int, seed: int = 0) -> None:
    """JSON lines as the CC tools write them: image and box-file paths by line number, a 4-20 word caption."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 21, records)
    words = rng.integers(len(WORDS), size=int(lengths.sum()))
    start = 0
    with open_atomic(path) as handle:
        for n, length in enumerate(lengths.tolist()):
            caption = [WORDS[w] for w in words[start:start + length].tolist()]
            start += length
            handle.write(json.dumps({"image": f"train_image.zip@/{n:08d}.jpg", "caption": caption,
                                     "frcnn": f"train_frcnn.zip@/{n:08d}.json"}) + "\n")


def read_list_of_dicts(path: str) -> list[dict]:
    """The index as it was before: one dict per JSON line (kept here only as the comparison)."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


class IndexReader(Dataset):
    """Item i reads record i as ConceptualCaptionsDataset does (paths and caption words); the first and the
    `reads`-th read of each worker also report the worker's memory."""

    def __init__(self, records, reads: int):
        self.records, self.reads, self.count = records, reads, 0

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        words = [str(w) for w in record["caption"]]
        self.count += 1
        out = {"pid": os.getpid(), "read": self.count, "length": len(record["image"]) + len(words)}
        if self.count in (1, self.reads):
            info = psutil.Process().memory_full_info()
            out.update(uss=info.uss, rss=info.rss)
        return out


def measure(kind: str, path: str, reads: int, workers: int) -> dict:
    """Build the index of `kind`, read through `workers` forked workers; per-worker memory in MiB."""
    start = time.perf_counter()
    if kind == "packed":
        from common.data.captions import read_caption_index

        records = read_caption_index(path)
    else:
        records = read_list_of_dicts(path)
    build_s = time.perf_counter() - start
    parent = psutil.Process().memory_full_info()
    indices = np.random.default_rng(1).integers(len(records), size=reads * workers).tolist()
    loader = DataLoader(IndexReader(records, reads), batch_size=None, sampler=indices, num_workers=workers,
                        multiprocessing_context="fork")
    first, last = {}, {}
    for item in loader:
        if "uss" in item:
            (first if item["read"] == 1 else last)[item["pid"]] = (item["uss"], item["rss"])
    mib = 2**20
    per_worker = [{"uss_first": first[p][0] / mib, "uss_last": last[p][0] / mib,
                   "uss_growth": (last[p][0] - first[p][0]) / mib, "rss_growth": (last[p][1] - first[p][1]) / mib}
                  for p in sorted(first)]
    return {"kind": kind, "records": len(records), "build_s": build_s, "parent_rss": parent.rss / mib,
            "workers": per_worker}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=3_300_000)
    p.add_argument("--reads", type=int, default=10_000, help="records read by each worker")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--file", default="/tmp/cc_index_3300000.json", help="synthetic index (written if missing)")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one kind, print JSON
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.one:
        print(json.dumps(measure(args.one, args.file, args.reads, args.workers)))
        return
    if not os.path.isfile(args.file):
        log.info("writing %d records to %s", args.records, args.file)
        write_index(args.file, args.records)
    rows = []
    for kind in args.kinds.split(","):  # a fresh process each: the other kind's memory does not interfere
        out = subprocess.run([sys.executable, __file__, "--one", kind, "--file", args.file, "--reads",
                              str(args.reads), "--workers", str(args.workers)], check=True, capture_output=True,
                             text=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        log.info("%s", json.dumps(result))
        for w, worker in enumerate(result["workers"]):
            rows.append(f"| {kind} | {result['records']} | {result['build_s']:.0f} | {result['parent_rss']:.0f} | {w} "
                        f"| {worker['uss_first']:.0f} | {worker['uss_last']:.0f} | {worker['uss_growth']:.1f} | "
                        f"{worker['rss_growth']:.1f} |")
    log.info("\n| index | records | build s | parent RSS MiB | worker | USS first MiB | USS last MiB | USS growth MiB "
             "| RSS growth MiB |\n|---|---|---|---|---|---|---|---|---|\n%s", "\n".join(rows))


if __name__ == "__main__":
    main()
