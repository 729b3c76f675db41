"""Detect boxes on your own images with a torchvision Faster R-CNN and write one bottom-up box file per image.

Usage: python data/extract_boxes.py --images DIR|LIST --out DIR --weights FILE [--with-features --cfg YAML --ckpt F]
(PREPARE_DATA.md, "Your own images"). Shard over processes: `torchrun --nproc_per_node N data/extract_boxes.py ...`.
Images that fail to read are listed at the end and make the exit status 1, after every other image is written.
"""
import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision.models import detection, get_model_weights
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import boxes as box_ops
from torchvision.transforms.functional import pil_to_tensor
from tqdm import tqdm

from common.atomic_write import write_text_atomic
from common.data.box_files import BoxFileError, read_box_file, write_box_file
from common.data.image_io import ImageReadError, open_image, split_zip_path
from common.engine import dist
from common.model.state_dict_io import CheckpointError, read_checkpoint_file
from data.region_features import load_feature_extractor, roi_features

log = logging.getLogger("extract_boxes")

DETECTORS = ("fasterrcnn_resnet50_fpn_v2", "fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn",
             "fasterrcnn_mobilenet_v3_large_320_fpn")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
WEIGHTS_DIR = "model/pretrained_model"
CLASS_KEY = "roi_heads.box_predictor.cls_score.weight"


@dataclass
class Summary:
    """What one run did (on this rank, or summed over ranks)."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def merge(self, other: "Summary") -> None:
        self.written += other.written
        self.skipped += other.skipped
        self.failed += other.failed


# ---- inputs and outputs ------------------------------------------------------------------------------------------
def list_images(images: str) -> list[str]:
    """A folder -> its image files (sorted, not recursive); a text file -> one path per line.

    Relative paths in a list are taken relative to the list file's folder; blank lines and `#` lines are skipped.
    """
    if os.path.isdir(images):
        paths = [os.path.join(images, n) for n in sorted(os.listdir(images)) if n.lower().endswith(IMAGE_SUFFIXES)]
    elif os.path.isfile(images):
        base = os.path.dirname(os.path.abspath(images))
        with open(images, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle]
        paths = [line if os.path.isabs(line) else os.path.join(base, line)
                 for line in lines if line and not line.startswith("#")]
    else:
        raise FileNotFoundError(f"--images: {images} is neither a folder nor a list file")
    if not paths:
        raise ValueError(f"--images: no images found in {images} (suffixes {', '.join(IMAGE_SUFFIXES)})")
    return paths


def image_stem(path: str) -> str:
    inside = split_zip_path(path)
    return os.path.splitext(os.path.basename(inside[1] if inside else path))[0]


def box_file_path(out_dir: str, image_path: str) -> str:
    return os.path.join(out_dir, image_stem(image_path) + ".json")


def check_unique_stems(paths: Sequence[str]) -> None:
    """Box files are named by image stem, so two images with one stem would overwrite each other."""
    seen: dict[str, str] = {}
    for path in paths:
        stem = image_stem(path)
        if stem in seen:
            raise ValueError(f"--images: {seen[stem]} and {path} share the file stem '{stem}' "
                             f"(box files are named {{stem}}.json); rename one")
        seen[stem] = path


def is_done(path: str, with_features: bool) -> bool:
    """A box file that exists and parses (with features when they are asked for) is not computed again."""
    if not os.path.isfile(path):
        return False
    try:
        record = read_box_file(path, fields=("boxes", "classes", "features") if with_features else ("boxes",),
                               feature_dim=None)
    except (BoxFileError, OSError) as err:
        log.warning("%s: unreadable box file, computing it again (%s)", path, err)
        return False
    return not with_features or "features" in record


class ImageListDataset(Dataset):
    """Items: {"path", "image" [3, H, W] in [0, 1] RGB, "size" (w, h)} or {"path", "error"}; optionally the
    Caffe-normalised resized image and im_info for our FastRCNN (`feature_transform`)."""

    def __init__(self, paths: Sequence[str], feature_transform=None):
        self.paths, self.feature_transform = list(paths), feature_transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        try:
            image = open_image(path)
        except (ImageReadError, FileNotFoundError) as err:
            return {"path": path, "error": str(err)}
        item = {"path": path, "image": pil_to_tensor(image).float() / 255.0, "size": image.size}
        if self.feature_transform is not None:
            out = self.feature_transform(image, np.zeros((0, 4), np.float32))
            item.update(caffe_image=out["image"], im_info=out["im_info"])
        return item


# ---- detector ----------------------------------------------------------------------------------------------------
def default_weights_path(detector: str) -> str:
    return os.path.join(WEIGHTS_DIR, f"{detector}_coco.pth")


def weights_hint(detector: str, path: str) -> str:
    """Which file to fetch for `detector` and where to put it (the torchvision weights enum is local metadata)."""
    enum = get_model_weights(detector).DEFAULT
    return (f"Download the torchvision weights {type(enum).__name__}.{enum.name} of '{detector}' ({enum.url}) "
            f"and save the file as {path}, or pass --weights")


def build_detector(detector: str, weights_path: str, min_size: int | None = None,
                   max_size: int | None = None) -> nn.Module:
    """torchvision `detector` with weights=None (nothing downloaded), then the local weights file loaded.

    The class count is read from the file; BatchNorm `num_batches_tracked` buffers may be absent (the published
    files use frozen BN). Any other missing or unexpected key is an error naming the file.
    """
    if detector not in DETECTORS:
        raise ValueError(f"--detector {detector!r} is not one of {list(DETECTORS)}")
    state = read_checkpoint_file(weights_path, hint=weights_hint(detector, weights_path))
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if CLASS_KEY not in state:
        raise CheckpointError(f"{weights_path}: not a {detector} state dict (no key {CLASS_KEY})")
    sizes = {k: v for k, v in (("min_size", min_size), ("max_size", max_size)) if v}
    model = getattr(detection, detector)(weights=None, weights_backbone=None,
                                         num_classes=int(state[CLASS_KEY].shape[0]), **sizes)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{weights_path}: keys do not fit torchvision {detector}; missing {missing[:8]}, "
                              f"unexpected {result.unexpected_keys[:8]}")
    return model.eval()


@torch.no_grad()
def detect(model: nn.Module, images: list[Tensor], max_boxes: int, min_boxes: int,
           min_score: float) -> list[dict[str, Tensor]]:
    """One box per RoI proposal, with the full softmax over the detector's classes (bottom-up style).

    Each proposal takes the box regressed for its best foreground class; per-class NMS; boxes scoring >= min_score
    are kept (at most max_boxes, at least min_boxes when there are that many). Returns per image `boxes` [K, 4]
    (x1, y1, x2, y2 in original pixels, clamped to [0, w-1] / [0, h-1]) and `classes` [K, C] (column 0 =
    background), sorted by score.
    """
    original = [tuple(img.shape[-2:]) for img in images]
    image_list, _ = model.transform(images)
    features = model.backbone(image_list.tensors)
    if isinstance(features, Tensor):
        features = {"0": features}
    proposals, _ = model.rpn(image_list, features)
    heads = model.roi_heads
    pooled = heads.box_head(heads.box_roi_pool(features, proposals, image_list.image_sizes))
    class_logits, box_regression = heads.box_predictor(pooled)
    counts = [len(p) for p in proposals]
    probs = F.softmax(class_logits.float(), -1).split(counts)
    regressed = heads.box_coder.decode(box_regression, proposals).split(counts)
    results = []
    for prob, boxes, resized, (height, width) in zip(probs, regressed, image_list.image_sizes, original, strict=True):
        score, label = prob[:, 1:].max(1)
        label = label + 1
        boxes = box_ops.clip_boxes_to_image(boxes[torch.arange(len(label), device=label.device), label], resized)
        keep = box_ops.remove_small_boxes(boxes, 1e-2)
        keep = keep[box_ops.batched_nms(boxes[keep], score[keep], label[keep], heads.nms_thresh)]
        confident = keep[score[keep] >= min_score]
        keep = confident[:max_boxes] if len(confident) >= min_boxes else keep[:min_boxes]
        out = resize_boxes(boxes[keep], resized, (height, width))
        out[:, 0::2] = out[:, 0::2].clamp(0, width - 1)
        out[:, 1::2] = out[:, 1::2].clamp(0, height - 1)
        results.append({"boxes": out, "classes": prob[keep]})
    return results


# ---- the run -----------------------------------------------------------------------------------------------------
def write_class_names(out_dir: str, detector: str, num_classes: int) -> None:
    """`classes.txt`: the column names of `classes` (the detector's categories, column 0 = background)."""
    names = get_model_weights(detector).DEFAULT.meta.get("categories", [])
    if len(names) == num_classes:
        write_text_atomic(os.path.join(out_dir, "classes.txt"), "\n".join(names) + "\n")


def extract(args: argparse.Namespace) -> Summary:
    """Run the detector on this rank's share of the images; returns what this rank wrote, skipped and failed."""
    env = dist.read_launch_env()
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    paths = list_images(args.images)
    check_unique_stems(paths)
    os.makedirs(args.out, exist_ok=True)
    summary = Summary()
    todo = []
    for path in paths[rank::world]:
        if is_done(box_file_path(args.out, path), args.with_features):
            summary.skipped.append(path)
        else:
            todo.append(path)
    device = torch.device(args.device if args.device != "cuda" else f"cuda:{int(env['LOCAL_RANK'])}")
    model = build_detector(args.detector, args.weights, args.min_size, args.max_size).to(device)
    num_classes = int(model.roi_heads.box_predictor.cls_score.out_features)
    if rank == 0:
        write_class_names(args.out, args.detector, num_classes)
        log.info("use NETWORK.VLBERT.visual_region_classes = %d (the detector's class count, background included)",
                 num_classes)
    extractor, transform = None, None
    if args.with_features:
        if not args.cfg:
            raise ValueError("--with-features needs --cfg (an end-to-end config naming the ResNet) and usually --ckpt")
        extractor, transform = load_feature_extractor(args.cfg, args.ckpt, args.task)
        extractor = extractor.to(device)
    loader = DataLoader(ImageListDataset(todo, transform), batch_size=args.batch_size, num_workers=args.workers,
                        collate_fn=list)
    for batch in tqdm(loader, desc=f"boxes (rank {rank}/{world})", disable=rank != 0 or not todo):
        for item in batch:
            if "error" in item:
                log.warning("failed: %s", item["error"])
                summary.failed.append(item["path"])
        good = [item for item in batch if "error" not in item]
        if not good:
            continue
        dets = detect(model, [item["image"].to(device) for item in good], args.max_boxes, args.min_boxes,
                      args.min_score)
        feats = roi_features(extractor, good, dets, device) if extractor is not None else [None] * len(good)
        for item, det, feat in zip(good, dets, feats, strict=True):
            extra = {} if feat is None else {"features": feat[1:].numpy(), "image_box_feature": feat[0].numpy()}
            write_box_file(box_file_path(args.out, item["path"]), boxes=det["boxes"].cpu().numpy(),
                             classes=det["classes"].cpu().numpy(), image_w=item["size"][0], image_h=item["size"][1],
                             image_id=image_stem(item["path"]), **extra)
            summary.written.append(item["path"])
    return summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="folder of images, or a text file with one path per line")
    parser.add_argument("--out", required=True, help="folder for the box files ({image_stem}.json)")
    parser.add_argument("--detector", default=DETECTORS[0], choices=DETECTORS, help="torchvision detection model")
    parser.add_argument("--weights", default=None, help=f"its state dict (default {WEIGHTS_DIR}/<detector>_coco.pth)")
    parser.add_argument("--max-boxes", type=int, default=36)
    parser.add_argument("--min-boxes", type=int, default=10, help="kept even below --min-score, as bottom-up's 10-100")
    parser.add_argument("--min-score", type=float, default=0.2)
    parser.add_argument("--min-size", type=int, default=None, help="detector input shorter side (its default if unset)")
    parser.add_argument("--max-size", type=int, default=None, help="detector input longer-side cap")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes reading images")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--with-features", action="store_true", help="also store 2048-d RoI features of our FastRCNN")
    parser.add_argument("--cfg", default=None, help="end-to-end config for --with-features (SCALES, ResNet)")
    parser.add_argument("--ckpt", default=None, help="training checkpoint whose image_feature_extractor is used")
    parser.add_argument("--task", default="pretrain", choices=("pretrain", "vcr", "vqa", "refcoco"),
                        help="task whose config defaults --cfg is read with")
    args = parser.parse_args(argv)
    args.weights = args.weights or default_weights_path(args.detector)
    if args.min_boxes > args.max_boxes:
        parser.error(f"--min-boxes {args.min_boxes} is larger than --max-boxes {args.max_boxes}")
    return args


def main(argv: Sequence[str] | None = None) -> Summary:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        summary = extract(args)
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        raise SystemExit(2) from err
    env = dist.setup() if dist.launched_distributed() else None
    total = Summary()
    for part in dist.all_gather_object(summary):
        total.merge(part)
    if env is None or env.is_main:
        print(f"box files: {len(total.written)} written, {len(total.skipped)} skipped (already done), "
              f"{len(total.failed)} failed" + (f": {', '.join(total.failed)}" if total.failed else ""))
    dist.teardown()
    return total


def exit_status(summary: Summary) -> int:
    """1 when any image failed (the others are still written), else 0: scripts can test the exit code."""
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(exit_status(main()))
