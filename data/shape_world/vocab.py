"""Fixed vocabularies of the toy world: COCO categories, shapes, colours, sizes and the toy detector classes.

Every shape stands for one real COCO category, so loaders that map names or ids to the COCO 80 work unchanged.
"""
from __future__ import annotations

# (id, name, supercategory) of the 80 COCO object categories, in the order of the official instance files.
COCO_CATEGORIES: tuple[tuple[int, str, str], ...] = (
    (1, "person", "person"), (2, "bicycle", "vehicle"), (3, "car", "vehicle"), (4, "motorcycle", "vehicle"),
    (5, "airplane", "vehicle"), (6, "bus", "vehicle"), (7, "train", "vehicle"), (8, "truck", "vehicle"),
    (9, "boat", "vehicle"), (10, "traffic light", "outdoor"), (11, "fire hydrant", "outdoor"),
    (13, "stop sign", "outdoor"), (14, "parking meter", "outdoor"), (15, "bench", "outdoor"),
    (16, "bird", "animal"), (17, "cat", "animal"), (18, "dog", "animal"), (19, "horse", "animal"),
    (20, "sheep", "animal"), (21, "cow", "animal"), (22, "elephant", "animal"), (23, "bear", "animal"),
    (24, "zebra", "animal"), (25, "giraffe", "animal"), (27, "backpack", "accessory"),
    (28, "umbrella", "accessory"), (31, "handbag", "accessory"), (32, "tie", "accessory"),
    (33, "suitcase", "accessory"), (34, "frisbee", "sports"), (35, "skis", "sports"),
    (36, "snowboard", "sports"), (37, "sports ball", "sports"), (38, "kite", "sports"),
    (39, "baseball bat", "sports"), (40, "baseball glove", "sports"), (41, "skateboard", "sports"),
    (42, "surfboard", "sports"), (43, "tennis racket", "sports"), (44, "bottle", "kitchen"),
    (46, "wine glass", "kitchen"), (47, "cup", "kitchen"), (48, "fork", "kitchen"), (49, "knife", "kitchen"),
    (50, "spoon", "kitchen"), (51, "bowl", "kitchen"), (52, "banana", "food"), (53, "apple", "food"),
    (54, "sandwich", "food"), (55, "orange", "food"), (56, "broccoli", "food"), (57, "carrot", "food"),
    (58, "hot dog", "food"), (59, "pizza", "food"), (60, "donut", "food"), (61, "cake", "food"),
    (62, "chair", "furniture"), (63, "couch", "furniture"), (64, "potted plant", "furniture"),
    (65, "bed", "furniture"), (67, "dining table", "furniture"), (70, "toilet", "furniture"),
    (72, "tv", "electronic"), (73, "laptop", "electronic"), (74, "mouse", "electronic"),
    (75, "remote", "electronic"), (76, "keyboard", "electronic"), (77, "cell phone", "electronic"),
    (78, "microwave", "appliance"), (79, "oven", "appliance"), (80, "toaster", "appliance"),
    (81, "sink", "appliance"), (82, "refrigerator", "appliance"), (84, "book", "indoor"),
    (85, "clock", "indoor"), (86, "vase", "indoor"), (87, "scissors", "indoor"), (88, "teddy bear", "indoor"),
    (89, "hair drier", "indoor"), (90, "toothbrush", "indoor"),
)
COCO_ID_TO_NAME = {cid: name for cid, name, _ in COCO_CATEGORIES}

# shape -> (COCO category name, noun used in text, plural noun, toy detector class in 1..1600)
SHAPES: dict[str, tuple[str, str, str, int]] = {
    "circle": ("sports ball", "ball", "balls", 101),
    "square": ("tv", "tv", "tvs", 202),
    "triangle": ("kite", "kite", "kites", 303),
    "person": ("person", "person", "people", 404),
    "car": ("car", "car", "cars", 505),
    "octagon": ("stop sign", "sign", "signs", 606),
}
SHAPE_NAMES: tuple[str, ...] = tuple(SHAPES)
_NAME_TO_ID = {name: cid for cid, name, _ in COCO_CATEGORIES}
SHAPE_CATEGORY_ID = {shape: _NAME_TO_ID[spec[0]] for shape, spec in SHAPES.items()}

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 225),
    "yellow": (240, 210, 35),
    "purple": (135, 55, 170),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
SIZES: tuple[str, ...] = ("small", "large")
BACKGROUNDS: tuple[tuple[int, int, int], ...] = ((205, 205, 205), (236, 226, 206), (172, 190, 200), (120, 120, 120))
SKIN = (232, 190, 150)
DARK = (45, 45, 55)

# Toy detector vocabulary: 1601 classes (column 0 = background), 401 attributes (column 0 = "no attribute").
NUM_CLASSES = 1601
NUM_ATTRIBUTES = 401
FEATURE_DIM = 2048
BACKGROUND_CLASSES = (11, 22, 33)  # "wall", "floor", "sky"-like stuff classes for distractor boxes
COLOUR_ATTRIBUTE = {colour: 10 + i for i, colour in enumerate(COLOUR_NAMES)}
SIZE_ATTRIBUTE = {"small": 20, "large": 21}


def no_space_name(coco_name: str) -> str:
    """COCO name as the VCR/VQA/RefCOCO loaders spell it (`sports ball` -> `sportsball`)."""
    return coco_name.replace(" ", "")


def shape_noun(shape: str) -> str:
    return SHAPES[shape][1]


def shape_plural(shape: str) -> str:
    return SHAPES[shape][2]


def coco_categories_json() -> list[dict]:
    """The `categories` list of a COCO instance file (all 80, real ids and names)."""
    return [{"id": cid, "name": name, "supercategory": sup} for cid, name, sup in COCO_CATEGORIES]
