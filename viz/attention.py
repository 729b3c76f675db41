"""What VL-BERT attends to: run one image + caption, dump [layers, heads, L, L] attention and draw it.

python viz/attention.py --cfg CFG [--ckpt CKPT] --image IMG --caption "..." [--boxes BOXES.json] [--layer L --head H]
                        [--token I] --out DIR
"""
from __future__ import annotations

import argparse
import logging
import os

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from common.atomic_write import open_atomic, write_text_atomic
from common.config import load_config
from common.data.box_files import read_box_file
from common.data.image_io import open_image
from common.data.tokenizer import BertTokenizer
from common.data.transforms import build_transform, prepend_whole_image_box
from common.model.pretrained import checkpoint_state_dict, strip_module_prefix
from common.model.state_dict_io import read_checkpoint_file
from common.model.task_base import VLBertTaskModule
from viz.render import draw_heatmap, draw_text_to_regions

log = logging.getLogger("viz.attention")
FALLBACK_NOTE = "no box file given: using the fallback regions (whole image + a fixed 3x3 grid)"


def fallback_boxes(width: int, height: int) -> np.ndarray:
    """[9, 4] boxes of a 3x3 grid over a width x height image, row by row (x1, y1, x2, y2 in pixels)."""
    xs, ys = np.linspace(0, width, 4), np.linspace(0, height, 4)
    return np.array([[xs[c], ys[r], xs[c + 1] - 1, ys[r + 1] - 1] for r in range(3) for c in range(3)],
                    dtype=np.float32)


def build_attention_model(cfg, load_bert: bool = True) -> VLBertTaskModule:
    """FastRCNN on the image pixels + object embedding + plain VisualLinguisticBert, named as every task module.

    The feature path is always end-to-end (a single image has no precomputed features), without the CNN
    regulariser and the semantic class embedding (a free image has no object classes).
    """
    cfg = cfg.clone()
    cfg.NETWORK.IMAGE_FEAT_PRECOMPUTED = False
    cfg.NETWORK.ENABLE_CNN_REG_LOSS = False  # no object classes for a free image; the regulariser is a loss only
    cfg.NETWORK.IMAGE_SEMANTIC = False
    return VLBertTaskModule.from_config(cfg, load_pretrained=load_bert).eval()


def load_checkpoint(module: torch.nn.Module, path: str) -> None:
    """Load the matching keys (with or without `module.`) of a task checkpoint; others are skipped and logged."""
    state = strip_module_prefix(checkpoint_state_dict(read_checkpoint_file(path), path))
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not any(k.startswith("vlbert.") for k in usable):
        raise ValueError(f"{path}: no VL-BERT weights (keys 'vlbert.*' / 'module.vlbert.*') match the model")
    skipped = sorted(set(own) - set(usable))
    if skipped:
        log.warning("%s: %d model keys keep their initial values (e.g. %s)", path, len(skipped), skipped[:3])
    module.load_state_dict(usable, strict=False)


def prepare_sample(cfg, tokenizer: BertTokenizer, image: Image.Image, caption: str,
                   boxes: np.ndarray) -> tuple[dict[str, Tensor], list[str]]:
    """One image + caption -> a batch of 1 (`image`, `boxes` [1, 1+K, 4] with the whole image first, `im_info`,
    `text` [1, T]) and the L labels `[CLS] words [SEP] [IMG] box 1..K [END]`."""
    out = build_transform(cfg, "test")(image, torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    width, height = float(out["im_info"][0]), float(out["im_info"][1])
    all_boxes = prepend_whole_image_box(out["boxes"], width, height)
    words = ["[CLS]", *tokenizer.tokenize(caption), "[SEP]"]
    batch = {"image": out["image"].unsqueeze(0), "boxes": all_boxes.unsqueeze(0),
             "im_info": torch.as_tensor(out["im_info"], dtype=torch.float32).reshape(1, -1),
             "text": torch.tensor([tokenizer.convert_tokens_to_ids(words)])}
    labels = words + ["[IMG]"] + [f"box {k}" for k in range(1, len(boxes) + 1)] + ["[END]"]
    return batch, labels


def vlbert_inputs(module: VLBertTaskModule, batch: dict) -> dict[str, Tensor]:
    """VL-BERT inputs as in caption pretraining: every token sees the whole-image box, segment 0."""
    regions = module.encode_regions(batch)
    text = batch["text"]
    return {"text_ids": text, "token_types": torch.zeros_like(text),
            "text_visual": regions.obj_reps[:, :1].expand(-1, text.shape[1], -1), "text_mask": text > 0,
            "object_vl": module.object_inputs(regions.obj_reps), "object_mask": regions.box_mask}


@torch.no_grad()
def run_vlbert(module: VLBertTaskModule, inputs: dict[str, Tensor], with_probs: bool = True):
    """(encoded layers list of [B, L, h], attention [B, layers, heads, L, L] or None).

    with_probs=True takes the explicit-softmax path, False the SDPA path.
    """
    out = module.vlbert(inputs["text_ids"], inputs["token_types"], inputs["text_visual"], inputs["text_mask"],
                        inputs["object_vl"], inputs["object_mask"], output_all_encoded_layers=True,
                        output_attention_probs=with_probs)
    return out.encoded, (torch.stack(out.attention_probs, 1) if with_probs else None)


def text_to_region_weights(attention: np.ndarray, num_text: int, num_boxes: int, token: int | None = None):
    """attention [L, L] of one head -> attention from text (mean over the caption words, or one token index)
    to [IMG] and to boxes 1..K: returns (img_weight, weights [K])."""
    rows = attention[token:token + 1] if token is not None else attention[1:num_text - 1]
    if rows.shape[0] == 0:
        rows = attention[:num_text]
    mass = rows.mean(0)
    return float(mass[num_text]), mass[num_text + 1:num_text + 1 + num_boxes]


def visualise(module, cfg, tokenizer, image_path: str, caption: str, out_dir: str, box_file: str | None = None,
              layer: int = -1, head: int = 0, token: int | None = None) -> dict[str, str]:
    """Compute and write attention.npy, text_to_regions.png, heatmap.png and (with bertviz) model_view.html."""
    image = open_image(image_path)
    if box_file:
        boxes = read_box_file(box_file, fields=("boxes",))["boxes"]
    else:
        boxes = fallback_boxes(*image.size)
        log.warning(FALLBACK_NOTE)
        print(FALLBACK_NOTE)  # noqa: T201 (the command line says so on stdout)
    batch, labels = prepare_sample(cfg, tokenizer, image, caption, boxes)
    _, probs = run_vlbert(module, vlbert_inputs(module, batch))
    attention = probs[0].float().numpy()  # [layers, heads, L, L]
    layers, heads = attention.shape[:2]
    if not (-layers <= layer < layers and 0 <= head < heads):
        raise ValueError(f"--layer {layer} / --head {head} out of range: the model has {layers} layers, {heads} heads")
    layer = layer % layers
    os.makedirs(out_dir, exist_ok=True)
    paths = {"attention": os.path.join(out_dir, "attention.npy")}
    with open_atomic(paths["attention"], "wb") as handle:
        np.save(handle, attention)
    num_text = int(batch["text"].shape[1])
    img_w, weights = text_to_region_weights(attention[layer, head], num_text, len(boxes), token)
    who = "text" if token is None else repr(labels[token])
    title = f"layer {layer} head {head}: {who} -> regions ([IMG] {img_w:.2f})"
    paths["text_to_regions"] = draw_text_to_regions(image, boxes, weights, labels[num_text + 1:-1],
                                                    os.path.join(out_dir, "text_to_regions.png"), title)
    paths["heatmap"] = draw_heatmap(attention[layer, head], labels, os.path.join(out_dir, "heatmap.png"),
                                    f"layer {layer} head {head}")
    html = model_view_html(attention, labels)
    if html is not None:
        paths["model_view"] = os.path.join(out_dir, "model_view.html")
        write_text_atomic(paths["model_view"], html)
    return paths


def model_view_html(attention: np.ndarray, labels: list[str]) -> str | None:
    """bertviz model view of attention [layers, heads, L, L] as an HTML string (None when bertviz is missing)."""
    try:
        from bertviz import model_view
    except ImportError:
        log.warning("bertviz is not installed (pip install bertviz): model_view.html is skipped")
        return None
    per_layer = [torch.from_numpy(a).unsqueeze(0) for a in attention]
    view = model_view(per_layer, labels, html_action="return")
    return getattr(view, "data", str(view))


def main(argv: list[str] | None = None) -> dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--ckpt", default=None, help="task checkpoint (keys with or without 'module.')")
    parser.add_argument("--image", required=True)
    parser.add_argument("--caption", required=True)
    parser.add_argument("--boxes", default=None, help="bottom-up box file (JSON); default: whole image + 3x3 grid")
    parser.add_argument("--layer", type=int, default=-1)
    parser.add_argument("--head", type=int, default=0)
    parser.add_argument("--token", type=int, default=None, help="one query token index instead of the text mean")
    parser.add_argument("--out", required=True)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from pretrain.config import add_pretrain_defaults

    opts = args.opts[1:] if args.opts[:1] == ["--"] else args.opts
    cfg = load_config(args.cfg, opts, add_task_defaults=add_pretrain_defaults)
    torch.manual_seed(max(int(cfg.RNG_SEED), 0))  # parts the checkpoint lacks start the same on every run
    tokenizer = BertTokenizer.from_pretrained_dir(cfg.NETWORK.BERT_MODEL_NAME)
    module = build_attention_model(cfg, load_bert=args.ckpt is None)
    if args.ckpt:
        load_checkpoint(module, args.ckpt)
    return visualise(module, cfg, tokenizer, args.image, args.caption, args.out, args.boxes, args.layer,
                     args.head, args.token)


if __name__ == "__main__":
    main()
