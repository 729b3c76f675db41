"""Generate the data-pipeline benchmark set: real-size JPEGs (640x480, ~57 KB) with 10-100 detector boxes each, in the
Conceptual Captions layout (folders and stored zips) and as shards written by data/make_shards.py.

Usage: `python bench/make_image_set.py --out /tmp/cc_bench [--images 20000] [--precomputed 5000] [--workers 2]`.
`{out}/e2e`: every image, box files with `boxes` and `classes` [N, 1601]; `{out}/prec`: the first `--precomputed`
records again with `features` [N, 2048] in their box files (precomputed mode; 1 MB per box file, hence fewer).
Each has `train_frcnn.json`, `train_image/`, `train_frcnn/`, the two zips, `shards/` and `sizes.json` (bytes per
format and the seconds make_shards took). Not for git: write it under /tmp.
"""
import argparse
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image, ImageDraw

from common.atomic_write import open_atomic, write_json_atomic
from common.data.box_files import write_box_file

log = logging.getLogger("bench.make_image_set")
WIDTH, HEIGHT, CLASSES, FEATURES = 640, 480, 1601, 2048
_NOISE: list = []


def make_image(index: int) -> Image.Image:
    """A 640x480 scene (colour gradient, 10-40 shapes, sensor-like noise); saved as a quality-90 JPEG."""
    rng = np.random.default_rng([index, 7])
    if not _NOISE:
        noise_rng = np.random.default_rng(0)
        _NOISE.extend(noise_rng.normal(0, 7, (HEIGHT, WIDTH, 3)).astype(np.int16) for _ in range(4))
    y = np.linspace(0, 1, HEIGHT, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 1, WIDTH, dtype=np.float32)[None, :, None]
    c = rng.random((3, 3)).astype(np.float32) * 170
    base = (c[0] * (1 - x) * (1 - y) + c[1] * x + c[2] * y).astype(np.int16)
    image = Image.fromarray(np.clip(base + _NOISE[index % 4], 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for k in range(int(rng.integers(10, 40))):
        x0, y0 = int(rng.integers(0, WIDTH - 20)), int(rng.integers(0, HEIGHT - 20))
        box = [x0, y0, x0 + int(rng.integers(10, 200)), y0 + int(rng.integers(10, 200))]
        (draw.ellipse if k % 2 else draw.rectangle)(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image


def box_arrays(index: int, with_features: bool) -> dict:
    rng = np.random.default_rng([index, 11])
    n = int(rng.integers(10, 101))
    x1, y1 = rng.uniform(0, WIDTH - 40, n), rng.uniform(0, HEIGHT - 40, n)
    boxes = np.stack([x1, y1, x1 + rng.uniform(20, WIDTH - x1), y1 + rng.uniform(20, HEIGHT - y1)], 1)
    boxes = np.minimum(boxes, [WIDTH - 1, HEIGHT - 1, WIDTH - 1, HEIGHT - 1])
    logits = rng.normal(0, 1, (n, CLASSES)).astype(np.float32)
    classes = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    out = {"boxes": boxes.astype(np.float32), "classes": classes}
    if with_features:
        out["features"] = rng.random((n, FEATURES), dtype=np.float32)
    return out


def write_record(args: tuple) -> None:
    root, index, with_features, image_source = args
    name = f"{index:08d}"
    image_path = os.path.join(root, "train_image", f"{name}.jpg")
    if image_source is None:
        with open_atomic(image_path, "wb") as handle:
            make_image(index).save(handle, "JPEG", quality=90)
    elif not os.path.exists(image_path):
        os.link(os.path.join(image_source, f"{name}.jpg"), image_path)
    write_box_file(os.path.join(root, "train_frcnn", f"{name}.json"), image_w=WIDTH, image_h=HEIGHT,
                   image_id=name, **box_arrays(index, with_features))


def make_set(root: str, count: int, with_features: bool, workers: int, image_source: str | None = None) -> dict:
    """The CC layout of `count` records under `root`, its zips and its shards; returns sizes and timings."""
    for folder in ("train_image", "train_frcnn"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    start = time.perf_counter()
    jobs = [(root, i, with_features, image_source) for i in range(count)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for done, _ in enumerate(pool.imap_unordered(write_record, jobs, chunksize=64), 1):
            if done % 2000 == 0:
                log.info("%s: %d / %d records", root, done, count)
    rng = np.random.default_rng(3)
    with open_atomic(os.path.join(root, "train_frcnn.json")) as handle:
        for i in range(count):
            words = rng.choice(["a", "photo", "of", "the", "red", "car", "dog", "on", "street", "beach"], 10)
            handle.write(json.dumps({"image": f"train_image.zip@/{i:08d}.jpg", "caption": words.tolist(),
                                     "frcnn": f"train_frcnn.zip@/{i:08d}.json"}) + "\n")
    sizes = {"records": count, "generate_s": time.perf_counter() - start}
    for folder in ("train_image", "train_frcnn"):  # stored zips with bare member names, as zip_folder.py makes
        subprocess.run(["zip", "-0", "-q", "-r", f"../{folder}.zip", "."], cwd=os.path.join(root, folder), check=True)
    start = time.perf_counter()
    content = "features" if with_features else "images"
    subprocess.run([sys.executable, "data/make_shards.py", "cc", "--root", root, "--out", os.path.join(root, "shards"),
                    "--content", content, "--workers", str(workers)], check=True, capture_output=True)
    sizes["make_shards_s"] = time.perf_counter() - start
    for name in ("train_image", "train_frcnn", "train_image.zip", "train_frcnn.zip", "shards"):
        path = os.path.join(root, name)
        sizes[name] = os.path.getsize(path) if os.path.isfile(path) else sum(
            os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))
    write_json_atomic(os.path.join(root, "sizes.json"), sizes, indent=1)
    return sizes


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--precomputed", type=int, default=5_000, help="records of the precomputed set (0 = none)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--only", choices=("e2e", "prec"), default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    e2e = os.path.join(args.out, "e2e")
    if args.only in (None, "e2e"):
        log.info("e2e: %s", make_set(e2e, args.images, False, args.workers))
    if args.precomputed and args.only in (None, "prec"):
        source = os.path.join(e2e, "train_image") if os.path.isdir(os.path.join(e2e, "train_image")) else None
        log.info("prec: %s", make_set(os.path.join(args.out, "prec"), args.precomputed, True, args.workers, source))


if __name__ == "__main__":
    main()
