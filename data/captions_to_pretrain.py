"""Turn your own image-caption pairs (CSV `image,caption` or JSON lines) plus their box files into the Conceptual
Captions pre-training layout: `<split>_frcnn.json`, `<split>_image/{idx:08d}.jpg`, `<split>_frcnn/{idx:08d}.json`.

Usage: python data/captions_to_pretrain.py --input pairs.csv --boxes-dir boxes/ --out data/my-captions [--split train]
"""
import argparse
import csv
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from common.atomic_write import open_atomic, write_bytes_atomic
from common.data.box_files import BoxFileError, read_box_file
from common.data.image_io import path_exists, read_bytes, split_zip_path

log = logging.getLogger("captions_to_pretrain")


@dataclass
class Pair:
    """One input row: `row` counts data rows from 1 (a CSV header is not a row); `line` is where it ends."""

    row: int
    line: int
    image: str
    caption: str


def read_pairs(path: str) -> Iterator[Pair]:
    """Rows of a CSV with columns `image,caption` (header required) or of a JSON-lines file with those keys.

    Relative image paths are taken relative to the input file's folder.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--input: file not found: {path}")
    base = os.path.dirname(os.path.abspath(path))
    resolve = lambda p: p if not p or os.path.isabs(p) else os.path.join(base, p)
    with open(path, encoding="utf-8", newline="") as handle:
        if path.lower().endswith((".jsonl", ".json")):
            row = 0
            for line_no, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                row += 1
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{line_no}: not a JSON object ({err})") from err
                if not isinstance(record, dict) or "image" not in record or "caption" not in record:
                    raise ValueError(f"{path}:{line_no}: expected an object with keys 'image' and 'caption'")
                caption = record["caption"]
                caption = " ".join(map(str, caption)) if isinstance(caption, list) else str(caption)
                yield Pair(row, line_no, resolve(str(record["image"])), caption)
            return
        reader = csv.DictReader(handle)
        missing = {"image", "caption"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: the CSV header must name the columns image,caption; missing {sorted(missing)} "
                             f"(found {reader.fieldnames})")
        for row, record in enumerate(reader, 1):
            yield Pair(row, reader.line_num, resolve(record["image"] or ""), record["caption"] or "")


def image_stem(path: str) -> str:
    inside = split_zip_path(path)
    return os.path.splitext(os.path.basename(inside[1] if inside else path))[0]


def place_image(source: str, target: str, link: bool) -> None:
    """Copy the image bytes (or symlink a plain file); the content keeps its format, readers decode by content."""
    if os.path.lexists(target):
        os.remove(target)
    if link and split_zip_path(source) is None:
        os.symlink(os.path.abspath(source), target)
        return
    write_bytes_atomic(target, read_bytes(source))


def problem_with(pair: Pair, box_file: str) -> str | None:
    """Why this row cannot be used, or None."""
    if not pair.caption.split():
        return "empty caption"
    if not pair.image or not path_exists(pair.image):
        return f"image not found: {pair.image}"
    if not os.path.isfile(box_file):
        return f"box file not found: {box_file} (run data/extract_boxes.py on the images first)"
    try:
        record = read_box_file(box_file, fields=("boxes", "classes"), feature_dim=None)
    except (BoxFileError, OSError) as err:
        return f"unreadable box file ({err})"
    if "classes" not in record:
        return f"box file {box_file} has no 'classes' (needed as the MVRC target)"
    return None


def convert(input_path: str, boxes_dir: str, out_dir: str, split: str = "train", link: bool = False) -> dict:
    """Write the layout; returns {"written": n, "skipped": [(row, reason), ...], "annotations": path}."""
    image_dir, frcnn_dir = (os.path.join(out_dir, f"{split}_{kind}") for kind in ("image", "frcnn"))
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(frcnn_dir, exist_ok=True)
    lines, skipped = [], []
    for pair in read_pairs(input_path):
        box_file = os.path.join(boxes_dir, image_stem(pair.image) + ".json")
        problem = problem_with(pair, box_file)
        if problem is not None:
            log.warning("%s row %d (line %d) skipped: %s", input_path, pair.row, pair.line, problem)
            skipped.append((pair.row, problem))
            continue
        name = f"{pair.row - 1:08d}"
        place_image(pair.image, os.path.join(image_dir, name + ".jpg"), link)
        write_bytes_atomic(os.path.join(frcnn_dir, name + ".json"), read_bytes(box_file))
        lines.append({"image": f"{split}_image.zip@/{name}.jpg", "caption": pair.caption.split(),
                      "frcnn": f"{split}_frcnn.zip@/{name}.json"})
    if not lines:
        raise ValueError(f"{input_path}: no usable rows ({len(skipped)} skipped); nothing written")
    annotations = os.path.join(out_dir, f"{split}_frcnn.json")
    with open_atomic(annotations) as handle:
        handle.writelines(json.dumps(line) + "\n" for line in lines)
    return {"written": len(lines), "skipped": skipped, "annotations": annotations}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="CSV (header image,caption) or JSON lines of image + caption")
    parser.add_argument("--boxes-dir", required=True, help="box files named {image_stem}.json (data/extract_boxes.py)")
    parser.add_argument("--out", required=True, help="dataset folder (DATASET.DATASET_PATH of the pre-training config)")
    parser.add_argument("--split", default="train", choices=("train", "val"))
    parser.add_argument("--link", action="store_true", help="symlink the images instead of copying them")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        result = convert(args.input, args.boxes_dir, args.out, args.split, args.link)
    except (FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        raise SystemExit(2) from err
    print(f"{result['annotations']}: {result['written']} pairs written, {len(result['skipped'])} rows skipped"
          + (" (rows " + ", ".join(str(r) for r, _ in result["skipped"]) + ")" if result["skipped"] else ""))
    print(f"use DATASET.DATASET_PATH: {args.out} and DATASET.ZIP_MODE: false")
    return result


if __name__ == "__main__":
    main()
