"""Bottom-up-attention-style detections for toy scenes: jittered true boxes plus background distractors,
1601-way class and 401-way attribute probabilities, and 2048-d features that encode shape, colour and size.

The features are a fixed random projection (shared by the whole world) of a one-hot code plus noise, so a
model fed precomputed features can learn what each box shows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.shape_world.vocab import (
    BACKGROUND_CLASSES,
    COLOUR_ATTRIBUTE,
    COLOUR_NAMES,
    FEATURE_DIM,
    NUM_ATTRIBUTES,
    NUM_CLASSES,
    SHAPE_NAMES,
    SHAPES,
    SIZE_ATTRIBUTE,
    SIZES,
)
from data.shape_world.world import Scene

CODE_DIM = len(SHAPE_NAMES) + 1 + len(COLOUR_NAMES) + len(SIZES)  # shapes, "background", colours, sizes


def feature_projection(seed: int) -> np.ndarray:
    """[CODE_DIM, 2048] projection shared by every box file of one world."""
    rng = np.random.default_rng([seed, 7001])
    return rng.normal(0.0, 1.0, size=(CODE_DIM, FEATURE_DIM)).astype(np.float32)


@dataclass
class Detections:
    """Per-box arrays of one image; `source[i]` is the scene object index of box i, or -1 for a distractor."""
    boxes: np.ndarray  # [N, 4] x1, y1, x2, y2 (original pixels)
    classes: np.ndarray  # [N, 1601]
    attrs: np.ndarray  # [N, 401]
    features: np.ndarray  # [N, 2048]
    source: list[int]


def _softmax_peaked(rng, width: int, peaks: dict[int, float]) -> np.ndarray:
    logits = rng.normal(0.0, 0.5, size=width)
    for index, boost in peaks.items():
        logits[index] += boost
    exp = np.exp(logits - logits.max())
    return (exp / exp.sum()).astype(np.float32)


def _code(shape: str | None, colour: str | None, size: str | None) -> np.ndarray:
    code = np.zeros(CODE_DIM, dtype=np.float32)
    code[SHAPE_NAMES.index(shape) if shape else len(SHAPE_NAMES)] = 1.0
    offset = len(SHAPE_NAMES) + 1
    if colour:
        code[offset + COLOUR_NAMES.index(colour)] = 1.0
    if size:
        code[offset + len(COLOUR_NAMES) + SIZES.index(size)] = 1.0
    return code


def _jitter(rng, box, width: int, height: int, scale: float) -> list[float]:
    x0, y0, x1, y1 = box
    w, h = x1 - x0 + 1, y1 - y0 + 1
    d = rng.normal(0.0, scale, size=4) * np.array([w, h, w, h])
    nx0, ny0 = np.clip(x0 + d[0], 0, width - 2), np.clip(y0 + d[1], 0, height - 2)
    nx1, ny1 = np.clip(x1 + d[2], nx0 + 1, width - 1), np.clip(y1 + d[3], ny0 + 1, height - 1)
    return [round(float(v), 2) for v in (nx0, ny0, nx1, ny1)]


def _distractor(rng, width: int, height: int) -> list[float]:
    w = rng.uniform(0.15, 0.5) * width
    h = rng.uniform(0.15, 0.5) * height
    x0, y0 = rng.uniform(0, width - 1 - w), rng.uniform(0, height - 1 - h)
    return [round(float(v), 2) for v in (x0, y0, x0 + w, y0 + h)]


def detect(scene: Scene, rng: np.random.Generator, projection: np.ndarray, jitter: float = 0.04,
           num_distractors: tuple[int, int] = (2, 3)) -> Detections:
    """All objects (jittered) plus 2-3 distractors, in a random order."""
    rows = [(i, _jitter(rng, o.box, scene.width, scene.height, jitter)) for i, o in enumerate(scene.objects)]
    rows += [(-1, _distractor(rng, scene.width, scene.height))
             for _ in range(int(rng.integers(num_distractors[0], num_distractors[1] + 1)))]
    order = rng.permutation(len(rows))
    boxes, classes, attrs, codes, source = [], [], [], [], []
    for k in order:
        index, box = rows[int(k)]
        boxes.append(box)
        source.append(index)
        if index < 0:
            stuff = BACKGROUND_CLASSES[int(rng.integers(len(BACKGROUND_CLASSES)))]
            classes.append(_softmax_peaked(rng, NUM_CLASSES, {0: 4.0, stuff: 5.0}))
            attrs.append(_softmax_peaked(rng, NUM_ATTRIBUTES, {0: 6.0}))
            codes.append(_code(None, None, None))
        else:
            obj = scene.objects[index]
            classes.append(_softmax_peaked(rng, NUM_CLASSES, {SHAPES[obj.shape][3]: 9.0}))
            attrs.append(_softmax_peaked(rng, NUM_ATTRIBUTES, {COLOUR_ATTRIBUTE[obj.colour]: 7.0,
                                                               SIZE_ATTRIBUTE[obj.size]: 5.0}))
            codes.append(_code(obj.shape, obj.colour, obj.size))
    code_matrix = np.stack(codes)
    noise = rng.normal(0.0, 0.3, size=(len(codes), FEATURE_DIM))
    features = np.maximum(code_matrix @ projection + noise, 0.0).astype(np.float32)
    return Detections(np.asarray(boxes, dtype=np.float32), np.stack(classes), np.stack(attrs), features, source)
