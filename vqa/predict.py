"""Answer one question about one image with a trained VQA model; prints the top-5 answers and their scores.

    python vqa/predict.py --cfg CFG --ckpt CKPT --image photo.jpg --question "what color is the car?"
                          [--boxes boxes.json] [--grid 3] [KEY VALUE ...]

Regions:
* `--boxes FILE`: a bottom-up-attention box file of this image (the `{image_id}.json` schema of PREPARE_DATA.md:
  base64 float32 `boxes` [N, 4] in image pixels, and `features` [N, 2048] for precomputed-feature configs).
* Fallback without a box file, end-to-end configs only (NETWORK.IMAGE_FEAT_PRECOMPUTED false, a ResNet in the
  model): the whole image plus a fixed grid of `--grid` x `--grid` equal cells (3 x 3 by default) are pooled from
  the image by the model's own ResNet. The script says so on stdout. Expect lower accuracy than with detected boxes.
* Precomputed-feature configs cannot see pixels: they need `--boxes` with `features`; without it the script
  stops and says what to provide.
The whole image is always box 0, as in training. Scores are per-answer sigmoids (the training loss is BCE).
"""
import argparse

import numpy as np
import torch

from common.config import load_config
from common.data.box_files import BoxFileError, read_box_file, whole_image_feature
from common.data.boxes import BoxError, check_boxes
from common.data.collate import collate_dicts
from common.data.image_io import open_image
from common.data.tokenizer import text_budget, truncate_to_budget
from common.data.transforms import build_transform, prepend_whole_image_box
from common.engine.evaluate import load_module_for_inference
from vqa.dataset import QUESTION_SPECIALS, VQADataset
from vqa.task import VQA, cached_tokenizer

TOP_K = 5


def grid_boxes(width: int, height: int, cells: int) -> np.ndarray:
    """[cells * cells, 4] equal cells covering the image, x1 y1 x2 y2 with inclusive ends, row by row."""
    xs = np.linspace(0, width, cells + 1)
    ys = np.linspace(0, height, cells + 1)
    boxes = [[xs[c], ys[r], xs[c + 1] - 1, ys[r + 1] - 1] for r in range(cells) for c in range(cells)]
    return np.asarray(boxes, dtype=np.float32)


def regions(cfg, image_size: tuple[int, int], box_file: str | None, cells: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Boxes [N, 4] in image pixels (whole image first) and features [N, 2048] or None; see the module docstring."""
    width, height = image_size
    precomputed = bool(cfg.NETWORK.IMAGE_FEAT_PRECOMPUTED)
    features = None
    if box_file is not None:
        try:
            record = read_box_file(box_file)
            boxes = check_boxes(record["boxes"], width, height, box_file)
        except (BoxFileError, BoxError) as err:
            raise SystemExit(str(err)) from err
        features = record.get("features")
        if precomputed and features is None:
            raise SystemExit(f"{box_file} has no 'features': this config reads precomputed bottom-up features "
                             f"(NETWORK.IMAGE_FEAT_PRECOMPUTED true), so the box file must carry them")
    elif precomputed:
        raise SystemExit("this config uses precomputed region features (NETWORK.IMAGE_FEAT_PRECOMPUTED true) and "
                         "cannot look at pixels: pass --boxes <file>, a bottom-up-attention box file of this image "
                         "with 'boxes' and 'features' (see PREPARE_DATA.md), or use an end-to-end config")
    else:
        boxes = grid_boxes(width, height, cells)
        print(f"no box file: using the whole image plus a {cells}x{cells} grid of boxes through the ResNet")
    boxes = np.clip(boxes, 0, [width - 1, height - 1, width - 1, height - 1]).astype(np.float32)
    boxes = prepend_whole_image_box(boxes, width, height)
    if features is not None and precomputed:
        try:
            whole = whole_image_feature(record, box_file)
        except BoxFileError as err:
            raise SystemExit(str(err)) from err
        features = np.concatenate([whole[None], features], 0).astype(np.float32)
    else:
        features = None
    return boxes, features


def predict(cfg, ckpt: str, image_path: str, question: str, box_file: str | None = None,
            cells: int = 3) -> list[tuple[str, float]]:
    """Top-5 (answer, sigmoid score) for one image and question."""
    image = open_image(image_path)
    boxes, features = regions(cfg, image.size, box_file, cells)
    transform = build_transform(cfg, "test")
    out = transform(None if features is not None else image, boxes, image_size=image.size)
    tokenizer = cached_tokenizer(cfg.NETWORK.BERT_MODEL_NAME)
    ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(question))
    budget = text_budget(cfg.NETWORK.VLBERT.max_position_embeddings, QUESTION_SPECIALS, len(boxes))
    ids = truncate_to_budget(ids, budget, f"--question {question[:40]!r}")
    item = {"boxes": out["boxes"], "im_info": out["im_info"], "question": torch.tensor(ids, dtype=torch.long),
            "index": 0}
    if features is not None:
        item["box_features"] = torch.from_numpy(features)
    else:
        item["image"] = out["image"]
    batch = collate_dicts([item], VQADataset.PAD_RULES)
    module = load_module_for_inference(VQA, cfg, ckpt)
    with torch.no_grad():
        scores = torch.sigmoid(module(batch)["label_logits"][0])
    top = scores.topk(min(TOP_K, scores.numel()))
    return [(module.answer_vocab[i], float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]


def main(argv=None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description="VQA on one image (top-5 answers)")
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--question", required=True)
    parser.add_argument("--boxes", default=None, help="bottom-up-attention box file of the image (see docstring)")
    parser.add_argument("--grid", type=int, default=3, help="grid size of the fallback boxes (end-to-end configs)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs that override the config")
    args = parser.parse_args(argv)
    cfg = load_config(args.cfg, args.opts, add_task_defaults=VQA.add_defaults)
    answers = predict(cfg, args.ckpt, args.image, args.question, args.boxes, args.grid)
    print(f"Q: {args.question}")
    for rank, (answer, score) in enumerate(answers, 1):
        print(f"  {rank}. {answer:<20s} {score:.3f}")
    return answers


if __name__ == "__main__":
    main()
