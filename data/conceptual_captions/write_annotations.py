"""Write `{split}.json` and `{split}_frcnn.json` (JSON lines, TSV order) for the images that survived the check.

`{split}.json` lists every valid image; `{split}_frcnn.json` only those with a box file in --frcnn-dir (the
bottom-up-attention output, `{n:08d}.json`). Paths are written in the zip form the loader expects in both modes.

    python data/conceptual_captions/write_annotations.py --tsv Train_GCC-training.tsv --split train \
        --valid-list train_valid.txt --frcnn-dir train_frcnn --out-dir .
"""
import argparse
import json
import logging
import os

from common.atomic_write import open_atomic
from data.conceptual_captions.tsv import read_tsv

log = logging.getLogger(__name__)


def write_annotations(tsv: str, split: str, valid_names: set[str], frcnn_dir: str, out_dir: str) -> tuple[int, int]:
    """Returns (lines in {split}.json, lines in {split}_frcnn.json)."""
    if not os.path.isdir(frcnn_dir):
        raise FileNotFoundError(f"box-file folder not found: {frcnn_dir}")
    box_files = set(os.listdir(frcnn_dir))
    plain_path = os.path.join(out_dir, f"{split}.json")
    frcnn_path = os.path.join(out_dir, f"{split}_frcnn.json")
    plain = with_boxes = 0
    with open_atomic(plain_path) as plain_out, open_atomic(frcnn_path) as frcnn_out:
        for row in read_tsv(tsv):
            if row.stem + ".jpg" not in valid_names:
                continue
            record = {"image": f"{split}_image.zip@/{row.stem}.jpg", "caption": row.caption.split(" ")}
            plain_out.write(json.dumps(record) + "\n")
            plain += 1
            if row.stem + ".json" in box_files:
                record["frcnn"] = f"{split}_frcnn.zip@/{row.stem}.json"
                frcnn_out.write(json.dumps(record) + "\n")
                with_boxes += 1
    return plain, with_boxes


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tsv", required=True)
    parser.add_argument("--split", required=True, choices=["train", "val"])
    parser.add_argument("--valid-list", required=True, help="output of check_images.py")
    parser.add_argument("--frcnn-dir", required=True, help="folder of {n:08d}.json box files")
    parser.add_argument("--out-dir", default=".")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with open(args.valid_list, encoding="utf-8") as handle:
        valid = {line.strip() for line in handle if line.strip()}
    plain, with_boxes = write_annotations(args.tsv, args.split, valid, args.frcnn_dir, args.out_dir)
    log.info("%s.json: %d images; %s_frcnn.json: %d with box files", args.split, plain, args.split, with_boxes)


if __name__ == "__main__":
    main()
