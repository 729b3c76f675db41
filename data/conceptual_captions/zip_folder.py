"""Pack a folder into an uncompressed zip whose members are the bare file names (as `cd folder && zip -0 ...`).

    python data/conceptual_captions/zip_folder.py --folder train_image --out train_image.zip
"""
import argparse
import logging
import os
import zipfile

log = logging.getLogger(__name__)


def zip_folder(folder: str, out: str, names: list[str] | None = None) -> int:
    """Store the files of `folder` (or only `names`) in `out` without compression, sorted; returns the count."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"folder not found: {folder}")
    names = sorted(names if names is not None else
                   [n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n))])
    missing = [n for n in names if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise FileNotFoundError(f"{folder}: listed files are missing, e.g. {missing[:3]}")
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name in names:
            archive.write(os.path.join(folder, name), arcname=name)
    return len(names)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--names", help="optional file listing the names to store (e.g. train_valid.txt)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = None
    if args.names:
        with open(args.names, encoding="utf-8") as handle:
            names = [line.strip() for line in handle if line.strip()]
    log.info("stored %d files in %s", zip_folder(args.folder, args.out, names), args.out)


if __name__ == "__main__":
    main()
