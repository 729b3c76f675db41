"""Write webdataset tar shards for streaming pre-training (DATASET.FORMAT: wds): `<prefix>-<k:06d>.tar`, each with
its record `<prefix>-<k:06d>.json` (samples, size, skipped keys), and `<prefix>-manifest.json` once all are done.

Usage (PREPARE_DATA.md, "Conceptual Captions as shards"):
  python data/make_shards.py cc --root data/conceptual-captions --split train --out data/cc-shards [--zip-mode]
  python data/make_shards.py img2dataset --input 'cc3m/{00000..00331}.tar' --out DIR (--boxes-dir DIR | --weights F)
  python data/make_shards.py corpus --input data/en_corpus/wiki.doc+data/en_corpus/bc1g.doc --out DIR
Resumable: a shard whose record matches it is complete and skipped; a shard is written under a temporary name,
renamed, then recorded. Exit status: 0 every shard written (skipped samples are reported, not errors); 1 a shard
failed (run again to resume); 2 bad arguments or input; 3 with --fail-on-skip when any sample was skipped.
"""
import argparse
import logging
import multiprocessing
import os
from collections.abc import Sequence

from tqdm import tqdm
from webdataset import TarWriter

from common.atomic_write import open_atomic, write_json_atomic
from common.data.shards import read_sidecar, sidecar_path
from data.extract_boxes import DETECTORS, default_weights_path
from data.shard_inputs import CaptionFolderInput, CorpusInput, ShardDetector, WebDatasetInput
from pretrain.datasets.shard_format import CONTENTS

log = logging.getLogger("make_shards")
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_SKIPPED = 1, 2, 3
_JOB: dict = {}  # the input and output of this run, inherited by forked worker processes


def shard_path(out: str, prefix: str, number: int) -> str:
    return os.path.join(out, f"{prefix}-{number:06d}.tar")


def write_shard(source, number: int, path: str) -> dict:
    """Write shard `number` of `source` to `path` (temporary name, fsync, rename), then its record."""
    skipped, keys = [], []
    name = os.path.basename(path)
    with open_atomic(path, "wb") as handle:  # flushed, fsynced and renamed when complete
        writer = TarWriter(handle, encoder=False, mtime=0)  # fixed times: the same input gives the same bytes
        for key, members, reason in source.samples(number):
            if members is None:
                log.warning("%s: sample %s skipped: %s", name, key, reason)
                skipped.append({"key": key, "reason": reason})
                continue
            writer.write(members)
            keys.append(key)
        writer.close()
    record = {"version": 1, "shard": name, "samples": len(keys), "bytes": os.path.getsize(path),
              "content": source.content, "first_key": keys[0] if keys else None,
              "last_key": keys[-1] if keys else None, "skipped": skipped, "source": source.description}
    write_json_atomic(sidecar_path(path), record, indent=1)
    return record


def _run_job(number: int) -> tuple[int, dict | None, str | None]:
    path = shard_path(_JOB["out"], _JOB["prefix"], number)
    try:
        return number, write_shard(_JOB["source"], number, path), None
    except Exception as err:  # noqa: BLE001 - one failed shard (disk full, unreadable input) must not end the run
        log.error("%s: not written (%s: %s); run again to resume", path, type(err).__name__, err)
        return number, None, f"{type(err).__name__}: {err}"


def write_shards(source, out: str, prefix: str, workers: int = 1, part: int = 0, num_parts: int = 1) -> dict:
    """Write this part's incomplete shards; returns {"done", "written", "failed", "skipped"} for this run."""
    os.makedirs(out, exist_ok=True)
    numbers = [k for k in source.shard_numbers() if k % num_parts == part]
    todo = [k for k in numbers if read_sidecar(shard_path(out, prefix, k)) is None]
    _JOB.update(source=source, out=out, prefix=prefix)
    summary = {"done": len(numbers) - len(todo), "written": [], "failed": [], "skipped": []}
    progress = tqdm(total=len(numbers), initial=summary["done"], unit="shard", desc=f"{prefix} shards")
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 and len(todo) > 1 else None
    try:
        results = pool.imap_unordered(_run_job, todo) if pool is not None else map(_run_job, todo)
        for number, record, error in results:
            if record is None:
                summary["failed"].append((number, error))
            else:
                summary["written"].append(number)
                summary["skipped"] += record["skipped"]
            progress.update(1)
            progress.set_postfix(failed=len(summary["failed"]), skipped=len(summary["skipped"]))
    finally:
        progress.close()
        if pool is not None:
            pool.close()
            pool.join()
    return summary


def write_manifest(source, out: str, prefix: str) -> dict | None:
    """`<prefix>-manifest.json` (totals, shard list, every skipped sample) when every shard is complete."""
    numbers = source.shard_numbers()
    records = [read_sidecar(shard_path(out, prefix, k)) for k in numbers]
    if not numbers or any(record is None for record in records):
        return None
    last = len(numbers) - 1
    manifest = {"version": 1, "pattern": f"{prefix}-{{000000..{last:06d}}}.tar" if last else f"{prefix}-000000.tar",
                "shards": len(records), "samples": sum(r["samples"] for r in records),
                "bytes": sum(r["bytes"] for r in records), "content": source.content, "source": source.description,
                "skipped": [s for r in records for s in r["skipped"]],
                "per_shard": [{"shard": r["shard"], "samples": r["samples"]} for r in records]}
    write_json_atomic(os.path.join(out, f"{prefix}-manifest.json"), manifest, indent=1)
    return manifest


def build_source(args: argparse.Namespace):
    if args.input_kind == "cc":
        return CaptionFolderInput(args.root, args.split, args.zip_mode, args.content, args.samples_per_shard,
                                  decode=not args.no_verify)
    if args.input_kind == "corpus":
        return CorpusInput(args.input, args.samples_per_shard)
    detector = None
    if args.boxes_dir is None:
        detector = ShardDetector(args.detector, args.weights or default_weights_path(args.detector), args.device,
                                 args.max_boxes, args.min_boxes, args.min_score, args.min_size, args.max_size)
    return WebDatasetInput(args.input, args.content, args.boxes_dir, detector, args.batch_size)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    kinds = parser.add_subparsers(dest="input_kind", required=True)
    cc = kinds.add_parser("cc", help="Conceptual Captions layout (also captions_to_pretrain.py's output)")
    cc.add_argument("--root", required=True, help="DATASET_PATH holding {split}_frcnn.json")
    cc.add_argument("--split", default="train", choices=("train", "val"))
    cc.add_argument("--zip-mode", action="store_true", help="read the stored zips instead of the folders")
    cc.add_argument("--no-verify", action="store_true", help="do not decode every image (faster; a broken image "
                                                             "is then found at training time)")
    web = kinds.add_parser("img2dataset", help="img2dataset webdataset output (<key>.jpg + <key>.txt)")
    web.add_argument("--input", required=True, help="its shards, a brace pattern ('cc3m/{00000..00331}.tar')")
    web.add_argument("--boxes-dir", default=None, help="box files named <key>.json (data/extract_boxes.py)")
    web.add_argument("--detector", default=DETECTORS[0], choices=DETECTORS, help="without --boxes-dir: detect boxes")
    web.add_argument("--weights", default=None, help="detector state dict (default as extract_boxes.py)")
    web.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    web.add_argument("--max-boxes", type=int, default=36)
    web.add_argument("--min-boxes", type=int, default=10)
    web.add_argument("--min-score", type=float, default=0.2)
    web.add_argument("--min-size", type=int, default=None)
    web.add_argument("--max-size", type=int, default=None)
    web.add_argument("--batch-size", type=int, default=8, help="images per detector call")
    corpus = kinds.add_parser("corpus", help="text corpus files, one sample per line")
    corpus.add_argument("--input", required=True, help="'+'-joined text files (DATASET.TRAIN_ANNOTATION_FILE)")
    for sub in (cc, web):
        sub.add_argument("--content", default="images", choices=CONTENTS,
                         help="images (end-to-end), features (precomputed; box files with features) or both")
    for sub in (cc, web, corpus):
        sub.add_argument("--out", required=True, help="folder for the shards (DATASET.DATASET_PATH)")
        sub.add_argument("--prefix", default=None, help="shard name prefix (default: the split, 'train', 'corpus')")
        sub.add_argument("--samples-per-shard", type=int, default=1000, help="records per shard (not img2dataset)")
        sub.add_argument("--workers", type=int, default=1, help="processes writing shards in parallel")
        sub.add_argument("--part", type=int, default=0, help="with --num-parts P: write the shards k with k %% P "
                                                             "== part (one machine or array job per part)")
        sub.add_argument("--num-parts", type=int, default=1)
        sub.add_argument("--fail-on-skip", action="store_true", help=f"exit {EXIT_SKIPPED} if any sample was skipped")
    args = parser.parse_args(argv)
    if not 0 <= args.part < args.num_parts or args.samples_per_shard < 1 or args.workers < 1:
        parser.error("need 0 <= --part < --num-parts, --samples-per-shard >= 1 and --workers >= 1")
    args.prefix = args.prefix or {"cc": getattr(args, "split", "train"), "corpus": "corpus"}.get(args.input_kind,
                                                                                                   "train")
    return args


def report(summary: dict, manifest: dict | None, args: argparse.Namespace) -> None:
    skipped = summary["skipped"]
    print(f"{args.out}: {len(summary['written'])} shards written now, {summary['done']} already complete, "
          f"{len(summary['failed'])} failed; {len(skipped)} samples skipped in the shards written now"
          + "".join(f"\n  skipped {s['key']}: {s['reason']}" for s in skipped[:20])
          + (f"\n  ... {len(skipped) - 20} more (see the shard records)" if len(skipped) > 20 else ""))
    for number, error in summary["failed"]:
        print(f"  FAILED {shard_path(args.out, args.prefix, number)}: {error}")
    if manifest is not None:
        print(f"all {manifest['shards']} shards complete: {manifest['samples']} samples, {manifest['bytes'] / 1e9:.2f}"
              f" GB, {len(manifest['skipped'])} skipped in total; in the config's dataset section: FORMAT: wds, "
              f"DATASET_PATH: {args.out}, TRAIN_SHARDS (or VAL_SHARDS): '{manifest['pattern']}'")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        source = build_source(args)
    except (FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return EXIT_BAD_INPUT
    summary = write_shards(source, args.out, args.prefix, args.workers, args.part, args.num_parts)
    manifest = write_manifest(source, args.out, args.prefix)
    report(summary, manifest, args)
    if summary["failed"]:
        return EXIT_FAILED
    skipped = manifest["skipped"] if manifest is not None else summary["skipped"]
    return EXIT_SKIPPED if args.fail_on_skip and skipped else 0


if __name__ == "__main__":
    raise SystemExit(main())
