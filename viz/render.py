"""Pictures of VL-BERT attention: text-to-region weights shaded over the image, and a token-by-token heat map."""
from __future__ import annotations

import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from common.atomic_write import open_atomic  # noqa: E402

log = logging.getLogger(__name__)

MIN_SIDE = 320  # small images are enlarged so that labels stay readable
SHADE = np.array([255.0, 40.0, 0.0])  # colour of the attention wash


def region_weight_map(boxes: np.ndarray, weights: np.ndarray, width: int, height: int) -> np.ndarray:
    """[H, W] map in [0, 1]: each pixel takes the largest shade of the boxes that contain it; a box's shade is
    0.15 + 0.85 * its min-max rescaled weight (0.5 for all when the weights are equal).

    boxes [K, 4] x1, y1, x2, y2 in pixels of a (width x height) image; weights [K] >= 0.
    """
    out = np.zeros((height, width), dtype=np.float32)
    if not len(weights):
        return out
    low, high = float(weights.min()), float(weights.max())
    shades = 0.15 + 0.85 * (weights - low) / (high - low) if high > low else np.full_like(weights, 0.5)
    for (x1, y1, x2, y2), w in zip(np.round(boxes).astype(int), shades, strict=True):
        x1, y1 = max(x1, 0), max(y1, 0)
        x2, y2 = min(x2, width - 1), min(y2, height - 1)
        if x2 >= x1 and y2 >= y1:
            block = out[y1:y2 + 1, x1:x2 + 1]
            np.maximum(block, w, out=block)
    return out


def draw_text_to_regions(image: Image.Image, boxes: np.ndarray, weights: np.ndarray, labels: list[str],
                         path: str, title: str = "") -> str:
    """Dim the image, wash each box in red by its relative weight, outline and label it; write a PNG to `path`.

    boxes [K, 4] in `image` pixels, weights [K] (e.g. attention mass from text onto each region).
    """
    image = image.convert("RGB")
    scale = max(1.0, MIN_SIDE / min(image.size))
    if scale > 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
        boxes = np.asarray(boxes, dtype=np.float32) * scale
    weights = np.asarray(weights, dtype=np.float32)
    alpha = region_weight_map(boxes, weights, image.width, image.height)[..., None] * 0.8
    pixels = np.asarray(image, dtype=np.float32) * 0.45  # dimmed background
    pixels = pixels * (1 - alpha) + SHADE * alpha
    canvas = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    top = float(weights.max()) if len(weights) else 1.0
    for (x1, y1, x2, y2), w, label in zip(boxes, weights, labels, strict=True):
        strength = int(80 + 175 * (w / top if top > 0 else 0))
        draw.rectangle([x1, y1, x2, y2], outline=(strength, strength, 0), width=2)
        draw.text((x1 + 3, y1 + 2), f"{label}: {w:.2f}", fill=(255, 255, 255))
    if title:
        draw.text((4, canvas.height - 14), title, fill=(255, 255, 255))
    with open_atomic(path, "wb") as handle:
        canvas.save(handle, format="PNG")
    log.info("wrote %s", path)
    return path


def draw_heatmap(attention: np.ndarray, labels: list[str], path: str, title: str = "") -> str:
    """attention [L, L] (rows = queries, columns = keys) with token / region names on both axes; writes a PNG."""
    size = max(4.0, 0.28 * len(labels) + 1.5)
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=80)
    shown = ax.imshow(attention, cmap="viridis", vmin=0.0, aspect="equal")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(shown, ax=ax, fraction=0.046)
    fig.tight_layout()
    with open_atomic(path, "wb") as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)
    log.info("wrote %s", path)
    return path
