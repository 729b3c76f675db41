"""Results browser: a static HTML page per evaluation details file (`*_details.jsonl`, written by vqa/test.py,
vcr/val.py / vcr/test.py and refcoco/test.py beside their result files) that opens from disk, no server needed.

    python viz/browse.py RESULT_DIR [--out DIR] [--thumbnails]
                         [--cfg CFG --ckpt CKPT [--attention-items 50] [KEY VALUE ...]]

Writes `<out>/<details stem>.html`, its data as a side-car script `<out>/<details stem>_data.js` (a page opened
from file:// may load scripts but not fetch() JSON), the shared `browse_files/` (script, style, thumbnails) and,
with several details files, `index.html`. Images are referenced by their path relative to the page (the page keeps
working as long as the data folder stays where it is); `--thumbnails` copies 320-pixel thumbnails next to the page
instead, which images inside zip archives always get. With `--cfg/--ckpt` the first `--attention-items` items of
each VQA, VCR or RefCOCO+ page get the attention of their text on each box (last layer, mean over heads), shown on a
click on the image (`viz/browse_attention.py`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
from collections import Counter

from common.atomic_write import open_atomic
from common.data.image_io import open_image, split_zip_path

log = logging.getLogger("viz.browse")
ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "browse_assets")
PAGE_SIZE = 50
THUMBNAIL_SIDE = 320


def find_details(result_dir: str) -> list[str]:
    """Every `*_details.jsonl` under `result_dir`, sorted."""
    found = sorted(os.path.join(folder, name) for folder, _, names in os.walk(result_dir) for name in names
                   if name.endswith("_details.jsonl"))
    if not found:
        raise FileNotFoundError(f"{result_dir}: no *_details.jsonl file (written by vqa/test.py, vcr/val.py, "
                                f"vcr/test.py and refcoco/test.py beside their result files)")
    return found


def read_details(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        items = [json.loads(line) for line in f if line.strip()]
    if not items:
        raise ValueError(f"{path}: no items")
    return items


def _mean(values: list[float]) -> float | None:
    return 100.0 * sum(values) / len(values) if values else None


def summarize(items: list[dict]) -> dict:
    """Counts and accuracy (percent of labelled items marked correct), the official score where items carry one
    (VQA), overall and per answer type (else per type)."""
    labelled = [i for i in items if i.get("correct") is not None]
    has_score = any(i.get("score") is not None for i in labelled)
    group_by = "answer_type" if any(i.get("answer_type") for i in items) else "type"
    groups = []
    for name in sorted({str(i.get(group_by) or "") for i in labelled}):
        members = [i for i in labelled if str(i.get(group_by) or "") == name]
        groups.append({"name": name, "count": len(members), "accuracy": _mean([float(i["correct"]) for i in members]),
                       "score": _mean([i["score"] for i in members]) if has_score else None})
    return {"count": len(items), "labelled": len(labelled), "correct": sum(bool(i["correct"]) for i in labelled),
            "accuracy": _mean([float(i["correct"]) for i in labelled]), "has_score": has_score,
            "score": _mean([i["score"] for i in labelled]) if has_score else None,
            "group_by": group_by.replace("_", " "), "groups": groups}


def image_source(path: str, out_dir: str, thumbnails: bool, cache: dict[str, str]) -> str:
    """The `src` of an image on the page: its path relative to the page, or a thumbnail copied under
    `browse_files/thumbs/` (with --thumbnails, and always for an image inside a zip archive)."""
    if path in cache:
        return cache[path]
    if not thumbnails and split_zip_path(path) is None:
        cache[path] = os.path.relpath(path, out_dir).replace(os.sep, "/")
        return cache[path]
    name = hashlib.sha1(path.encode()).hexdigest()[:16] + ".jpg"
    target = os.path.join(out_dir, "browse_files", "thumbs", name)
    if not os.path.isfile(target):
        image = open_image(path, none_on_error=True)
        if image is None:
            log.warning("%s: does not open; the page shows its boxes without the image", path)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            with open_atomic(target, "wb") as f:  # an interrupted run leaves no half-written thumbnail
                image.convert("RGB").save(f, format="JPEG", quality=85)
    cache[path] = f"browse_files/thumbs/{name}"
    return cache[path]


def page_data(path: str, items: list[dict], out_dir: str, thumbnails: bool) -> dict:
    """What the page script reads: title, summary, the types with their counts, the items with `src`."""
    cache: dict[str, str] = {}
    for item in items:
        item["src"] = image_source(item["image"], out_dir, thumbnails, cache)
    types = Counter(str(i.get("type") or "") for i in items)
    first = items[0]
    return {"title": f"{first['task']} {first['split']}: {os.path.basename(path)}", "source": os.path.abspath(path),
            "page_size": PAGE_SIZE, "summary": summarize(items), "types": sorted(types.items()), "items": items}


def write_page(out_dir: str, stem: str, data: dict) -> str:
    """`<stem>.html` and `<stem>_data.js` (atomically), and the shared script and style under browse_files/."""
    os.makedirs(os.path.join(out_dir, "browse_files"), exist_ok=True)
    for name in ("browse.js", "browse.css"):
        shutil.copyfile(os.path.join(ASSETS, name), os.path.join(out_dir, "browse_files", name))
    with open_atomic(os.path.join(out_dir, f"{stem}_data.js"), encoding="utf-8") as f:
        f.write("window.BROWSE_DATA = " + json.dumps(data, separators=(",", ":")).replace("</", "<\\/") + ";\n")
    with open(os.path.join(ASSETS, "page.html"), encoding="utf-8") as f:
        html = f.read().replace("__TITLE__", data["title"].replace("&", "&amp;").replace("<", "&lt;"))
    page = os.path.join(out_dir, f"{stem}.html")
    with open_atomic(page, encoding="utf-8") as f:
        f.write(html.replace("__DATA__", f"{stem}_data.js"))
    return page


def write_index(out_dir: str, pages: list[str]) -> str:
    links = "\n".join(f'<li><a href="{os.path.basename(p)}">{os.path.basename(p)}</a></li>' for p in pages)
    path = os.path.join(out_dir, "index.html")
    with open_atomic(path, encoding="utf-8") as f:
        f.write(f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Results</title></head>"
                f"<body><h1>Results</h1><ul>\n{links}\n</ul></body></html>\n")
    return path


def browse(result_dir: str, out_dir: str | None = None, thumbnails: bool = False, attention=None) -> list[str]:
    """Write one page per details file under `result_dir` (and index.html with several); returns the pages.
    `attention(items)`, when given, adds `attention` to the items it can (see viz/browse_attention.py)."""
    out_dir = os.path.abspath(out_dir or os.path.join(result_dir, "browse"))
    pages = []
    for path in find_details(result_dir):
        items = read_details(path)
        if attention is not None:
            try:
                attention(items)
            except Exception as err:  # noqa: BLE001 - a page without attention maps is still a page
                log.warning("%s: no attention maps (%s: %s)", path, type(err).__name__, err)
        stem = os.path.basename(path)[: -len("_details.jsonl")]
        pages.append(write_page(out_dir, stem, page_data(path, items, out_dir, thumbnails)))
        log.info("%s: %d items -> %s", path, len(items), pages[-1])
    if len(pages) > 1:
        write_index(out_dir, pages)
    return pages


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description="Static results browser of an evaluation folder")
    parser.add_argument("result_dir", help="folder holding *_details.jsonl files (searched recursively)")
    parser.add_argument("--out", default=None, help="output folder (default: RESULT_DIR/browse)")
    parser.add_argument("--thumbnails", action="store_true", help="copy thumbnails instead of linking the images")
    parser.add_argument("--cfg", default=None, help="config of the evaluated model (attention maps)")
    parser.add_argument("--ckpt", default=None, help="its checkpoint (attention maps)")
    parser.add_argument("--attention-items", type=int, default=50, help="items per page that get attention maps")
    parser.add_argument("opts", nargs="*", help="KEY VALUE config overrides (with --cfg)")
    args = parser.parse_intermixed_args(argv)  # the overrides come after RESULT_DIR and the options
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    attention = None
    if args.cfg or args.ckpt:
        if not (args.cfg and args.ckpt):
            parser.error("attention maps need both --cfg and --ckpt")
        from viz.browse_attention import AttentionMaps

        attention = AttentionMaps(args.cfg, args.ckpt, args.opts, args.attention_items)
    pages = browse(args.result_dir, args.out, args.thumbnails, attention)
    for page in pages:
        log.info("open file://%s", page)
    return pages


if __name__ == "__main__":
    main()
