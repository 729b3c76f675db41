"""Scenes of the toy world: coloured shapes on a plain background, sampled from a numpy Generator and drawn with PIL.

Boxes are integer pixel boxes `(x0, y0, x1, y1)` with inclusive ends: the shape touches all four edges.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from data.shape_world.vocab import (
    BACKGROUNDS,
    COLOUR_NAMES,
    COLOURS,
    DARK,
    SHAPE_CATEGORY_ID,
    SHAPE_NAMES,
    SHAPES,
    SIZES,
    SKIN,
)

Polygon = list[tuple[float, float]]
MARGIN = 2  # pixels kept free at the image border
BIGGEST_FACTOR = 1.5  # "the biggest" object: at least this many times the box area of each object compared
GAP = 3  # pixels kept free between two objects


@dataclass(frozen=True)
class ToyObject:
    shape: str
    colour: str
    size: str
    box: tuple[int, int, int, int]

    @property
    def category_id(self) -> int:
        return SHAPE_CATEGORY_ID[self.shape]

    @property
    def coco_name(self) -> str:
        return SHAPES[self.shape][0]

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2.0, (y0 + y1) / 2.0

    @property
    def box_area(self) -> int:
        x0, y0, x1, y1 = self.box
        return (x1 - x0 + 1) * (y1 - y0 + 1)

    @property
    def xywh(self) -> list[float]:
        """COCO bbox: top-left corner and the pixel extent (x1 - x0 + 1)."""
        x0, y0, x1, y1 = self.box
        return [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)]

    def parts(self) -> list[tuple[str, Polygon, tuple[int, int, int]]]:
        """Drawing parts in order: (kind 'ellipse'|'polygon', points, fill colour)."""
        return _PARTS[self.shape](self.box, COLOURS[self.colour])

    def polygons(self) -> list[Polygon]:
        """Segmentation polygons (ellipses approximated by 16-gons), clipped to the box."""
        x0, y0, x1, y1 = self.box
        out = []
        for kind, pts, _ in self.parts():
            poly = _ellipse_polygon(pts, 16) if kind == "ellipse" else pts
            out.append([(min(max(x, x0), x1), min(max(y, y0), y1)) for x, y in poly])
        return out


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    background: int
    objects: tuple[ToyObject, ...]

    def biggest(self, factor: float = BIGGEST_FACTOR) -> ToyObject | None:
        """The object whose box is at least `factor` times the area of every other one, if there is one."""
        top = max(self.objects, key=lambda o: o.box_area)
        others = [o for o in self.objects if o is not top]
        return top if all(factor * o.box_area <= top.box_area for o in others) else None

    def count(self, **attrs: str) -> int:
        return sum(all(getattr(o, k) == v for k, v in attrs.items()) for o in self.objects)


# ----------------------------------------------------------------------------------------------- shapes
def _ellipse_polygon(bbox: Polygon, n: int) -> Polygon:
    (x0, y0), (x1, y1) = bbox
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return [(cx + rx * math.cos(2 * math.pi * k / n), cy + ry * math.sin(2 * math.pi * k / n)) for k in range(n)]


def _circle(box, colour):
    x0, y0, x1, y1 = box
    return [("ellipse", [(x0, y0), (x1, y1)], colour)]


def _square(box, colour):
    x0, y0, x1, y1 = box
    return [("polygon", [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], colour)]


def _triangle(box, colour):
    x0, y0, x1, y1 = box
    return [("polygon", [((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], colour)]


def _octagon(box, colour):
    x0, y0, x1, y1 = box
    cx, cy = 0.29 * (x1 - x0), 0.29 * (y1 - y0)
    pts = [(x0 + cx, y0), (x1 - cx, y0), (x1, y0 + cy), (x1, y1 - cy),
           (x1 - cx, y1), (x0 + cx, y1), (x0, y1 - cy), (x0, y0 + cy)]
    return [("polygon", pts, colour)]


def _person(box, colour):
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    head = min(w * 0.7, h * 0.28)
    hx0 = (x0 + x1) / 2 - head / 2
    neck, hip = y0 + head + 1, y0 + 0.68 * h
    body = [(x0, neck), (x1, neck), (x1 - 0.15 * w, hip), (x0 + 0.15 * w, hip)]
    legs = [(x0 + 0.2 * w, hip), (x1 - 0.2 * w, hip), (x1 - 0.2 * w, y1), (x0 + 0.2 * w, y1)]
    return [("ellipse", [(hx0, y0), (hx0 + head, y0 + head)], SKIN), ("polygon", body, colour),
            ("polygon", legs, DARK)]


def _car(box, colour):
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    r = 0.2 * h
    roof, belt, sill = y0, y0 + 0.38 * h, y1 - r
    cabin = [(x0 + 0.22 * w, belt), (x0 + 0.32 * w, roof), (x0 + 0.68 * w, roof), (x0 + 0.8 * w, belt)]
    body = [(x0, belt), (x1, belt), (x1, sill), (x0, sill)]
    wheels = [("ellipse", [(cx - r, y1 - 2 * r), (cx + r, y1)], DARK) for cx in (x0 + 0.25 * w, x0 + 0.75 * w)]
    return [("polygon", cabin, colour), ("polygon", body, colour)] + wheels


_PARTS = {"circle": _circle, "square": _square, "triangle": _triangle, "octagon": _octagon,
          "person": _person, "car": _car}
# width / height of each shape's box
_ASPECT = {"circle": 1.0, "square": 1.0, "triangle": 1.1, "octagon": 1.0, "person": 0.5, "car": 1.7}


# ---------------------------------------------------------------------------------------------- sampling
def _object_dims(rng: np.random.Generator, shape: str, size: str, base: int) -> tuple[int, int]:
    lo, hi = (0.17, 0.22) if size == "small" else (0.32, 0.40)
    extent = base * rng.uniform(lo, hi)
    aspect = _ASPECT[shape]
    if aspect >= 1:
        w, h = extent * math.sqrt(aspect), extent / math.sqrt(aspect)
    else:
        w, h = extent * aspect * 1.3, extent * 1.3
    return max(int(round(w)), 8), max(int(round(h)), 8)


def _overlaps(box, others) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 <= b[2] + GAP and b[0] <= x1 + GAP and y0 <= b[3] + GAP and b[1] <= y1 + GAP for b in others)


def _place(rng, width, height, w, h, taken) -> tuple[int, int, int, int] | None:
    if w + 2 * MARGIN >= width or h + 2 * MARGIN >= height:
        return None
    for _ in range(40):
        x0 = int(rng.integers(MARGIN, width - MARGIN - w))
        y0 = int(rng.integers(MARGIN, height - MARGIN - h))
        box = (x0, y0, x0 + w - 1, y0 + h - 1)
        if not _overlaps(box, taken):
            return box
    return None


def _shape_plan(rng: np.random.Generator, n: int, flavour: str) -> list[str]:
    """Shapes of the n objects; a small pool of shapes makes repeated categories common."""
    choices = [s for s in SHAPE_NAMES if not (flavour == "things" and s == "person")]
    pool = list(rng.choice(choices, size=int(rng.integers(2, 5)), replace=False))
    shapes = [str(pool[int(rng.integers(len(pool)))]) for _ in range(n)]
    if flavour == "people":
        shapes[0] = shapes[1] = "person"
    elif flavour == "things":
        shapes[1] = shapes[0]
    elif flavour == "vcr":
        shapes[0] = "person"
    return shapes


def _flavour_ok(objects: list[ToyObject], flavour: str) -> bool:
    people = sum(o.shape == "person" for o in objects)
    if flavour == "people":
        return people >= 2
    if flavour == "things":
        kinds = [o.shape for o in objects]
        return people == 0 and any(kinds.count(k) >= 2 for k in kinds)
    if flavour == "vcr":
        return people >= 1
    return True


def sample_scene(rng: np.random.Generator, width: int, height: int, flavour: str = "any") -> Scene:
    """A scene of 2-5 non-overlapping objects. flavour: any | people (>= 2 persons) | things (no person,
    a repeated category) | vcr (>= 1 person, 4-5 objects planned)."""
    base = min(width, height)
    for _ in range(50):
        n = int(rng.integers(4 if flavour == "vcr" else 2, 6))
        objects: list[ToyObject] = []
        for shape in _shape_plan(rng, n, flavour):
            colour = COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
            size = SIZES[int(rng.integers(2))]
            box = _place(rng, width, height, *_object_dims(rng, shape, size, base), [o.box for o in objects])
            if box is None and size == "large":
                size = "small"
                box = _place(rng, width, height, *_object_dims(rng, shape, size, base), [o.box for o in objects])
            if box is not None:
                objects.append(ToyObject(shape, colour, size, box))
        if len(objects) >= 2 and _flavour_ok(objects, flavour):
            return Scene(width, height, int(rng.integers(len(BACKGROUNDS))), tuple(objects))
    raise RuntimeError(f"could not place a '{flavour}' scene in a {width}x{height} image")


# ------------------------------------------------------------------------------------------------ drawing
def _draw_parts(draw: ImageDraw.ImageDraw, obj: ToyObject, fill=None) -> None:
    for kind, pts, colour in obj.parts():
        if kind == "ellipse":
            draw.ellipse(pts, fill=fill if fill is not None else colour)
        else:
            draw.polygon(pts, fill=fill if fill is not None else colour)


def render(scene: Scene) -> Image.Image:
    """RGB image of the scene."""
    image = Image.new("RGB", (scene.width, scene.height), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        _draw_parts(draw, obj)
    return image


def object_area(scene: Scene, obj: ToyObject) -> float:
    """Pixel area of the drawn object (what COCO's `area` measures)."""
    mask = Image.new("L", (scene.width, scene.height), 0)
    _draw_parts(ImageDraw.Draw(mask), obj, fill=1)
    return float(np.asarray(mask, dtype=np.uint8).sum())


def flat_polygons(obj: ToyObject) -> list[list[float]]:
    """COCO segmentation: one flat [x1, y1, x2, y2, ...] list per polygon, rounded to 0.1 px."""
    return [[round(float(v), 1) for pt in poly for v in pt] for poly in obj.polygons()]


def point_polygons(obj: ToyObject) -> list[list[list[float]]]:
    """VCR segms: one list of [x, y] points per polygon."""
    return [[[round(float(x), 1), round(float(y), 1)] for x, y in poly] for poly in obj.polygons()]
