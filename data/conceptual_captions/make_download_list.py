"""Write the download list of a Conceptual Captions split: one `<image path> <url>` line per TSV row.

    python data/conceptual_captions/make_download_list.py --tsv Train_GCC-training.tsv --image-dir train_image \
        --out train_download.txt
    xargs -a train_download.txt -n 2 -P 20 sh -c 'wget -q -T 20 -t 2 -O "$0" "$1" || rm -f "$0"'
"""
import argparse
import logging
import os

from common.atomic_write import open_atomic
from data.conceptual_captions.tsv import read_tsv

log = logging.getLogger(__name__)


def make_download_list(tsv: str, image_dir: str, out: str, skip_existing: bool = False) -> int:
    """Lines `image_dir/{n:08d}.jpg url` for every row (downloaded ones skipped on request); returns the count."""
    count = 0
    with open_atomic(out) as handle:
        for row in read_tsv(tsv):
            target = os.path.join(image_dir, row.stem + ".jpg")
            if skip_existing and os.path.isfile(target) and os.path.getsize(target) > 0:
                continue
            if " " in target or " " in row.url:
                raise ValueError(f"{tsv}:{row.number + 1}: spaces in '{target}' or the url would break the list")
            handle.write(f"{target} {row.url}\n")
            count += 1
    return count


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tsv", required=True, help="Train_GCC-training.tsv or Validation_GCC-1.1.0-Validation.tsv")
    parser.add_argument("--image-dir", required=True, help="folder the images go to (e.g. train_image)")
    parser.add_argument("--out", required=True, help="list file to write")
    parser.add_argument("--skip-existing", action="store_true", help="leave out images already downloaded")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.makedirs(args.image_dir, exist_ok=True)
    log.info("%d images to download listed in %s", make_download_list(args.tsv, args.image_dir, args.out,
                                                                       args.skip_existing), args.out)


if __name__ == "__main__":
    main()
