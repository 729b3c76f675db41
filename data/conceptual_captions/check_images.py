"""Check downloaded Conceptual Captions images; list the valid ones and (with --delete) remove the others.

Invalid: empty, not decodable as an image, a side under 10 px or over 10000 px.

    python data/conceptual_captions/check_images.py --image-dir train_image --out train_valid.txt --delete
"""
import argparse
import logging
import os
import warnings

from PIL import Image

from common.atomic_write import open_atomic

log = logging.getLogger(__name__)
MIN_SIDE, MAX_SIDE = 10, 10000


def image_problem(path: str) -> str | None:
    """Why the image is unusable, or None when it is fine."""
    if os.path.getsize(path) == 0:
        return "empty file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                width, height = img.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        return f"unreadable ({type(err).__name__}: {err})"
    if min(width, height) < MIN_SIDE or max(width, height) > MAX_SIDE:
        return f"size {width}x{height} outside [{MIN_SIDE}, {MAX_SIDE}] px"
    return None


def check_images(image_dir: str, delete: bool = False) -> tuple[list[str], dict[str, str]]:
    """(sorted valid file names, {invalid file name: reason}); invalid files are removed when `delete`."""
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"image folder not found: {image_dir}")
    valid, invalid = [], {}
    for name in sorted(os.listdir(image_dir)):
        path = os.path.join(image_dir, name)
        if not os.path.isfile(path):
            continue
        problem = image_problem(path)
        if problem is None:
            valid.append(name)
            continue
        invalid[name] = problem
        log.info("%s: %s%s", path, problem, " (deleted)" if delete else "")
        if delete:
            os.remove(path)
    return valid, invalid


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-dir", required=True)
    parser.add_argument("--out", required=True, help="file listing the valid image names, one a line")
    parser.add_argument("--delete", action="store_true", help="remove the invalid images")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    valid, invalid = check_images(args.image_dir, args.delete)
    with open_atomic(args.out) as handle:
        handle.writelines(name + "\n" for name in valid)
    log.info("%d valid, %d invalid images in %s; list written to %s", len(valid), len(invalid), args.image_dir,
             args.out)


if __name__ == "__main__":
    main()
