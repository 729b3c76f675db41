"""Reader of the refer toolkit's RefCOCO+ files: `refs(<split_by>).p` (a pickled list of plain dicts) and
`instances.json` (COCO instance format, read with pycocotools).

The pickle is loaded by `SafeUnpickler`, which builds only builtin containers and scalars and refuses any other
global, so a tampered file cannot run code. Split matching follows the refer API: "testA"/"testB" match the refs
whose split contains "A"/"B", "test" matches every split containing "test", other names match exactly.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
from collections.abc import Iterable

from pycocotools.coco import COCO

log = logging.getLogger(__name__)

REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")


class ReferFormatError(ValueError):
    """A refer-format file that cannot be read or is inconsistent; the message names the file (and ref id)."""


class SafeUnpickler(pickle.Unpickler):
    """Unpickler for data made of builtin values only: any global reference (class, function) is refused."""

    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")  # Python-2 pickles: str fields decode as latin-1 bytes
        self.source = source

    def find_class(self, module: str, name: str):
        raise ReferFormatError(f"{self.source}: refuses to load global '{module}.{name}'; the refs pickle must hold "
                               f"only lists, dicts, strings and numbers")


def load_refs_pickle(path: str) -> list[dict]:
    """The list of ref dicts in `refs(unc).p`, loaded with `SafeUnpickler`, each checked by `check_ref`.

    Any file that is not such a list (random bytes included) raises ReferFormatError naming it; this is the
    function a data check should call on the refs file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"refs pickle not found: {path}")
    with open(path, "rb") as f:
        data = f.read()  # from memory, a corrupt length field cannot make the unpickler allocate gigabytes
    try:
        refs = SafeUnpickler(io.BytesIO(data), path).load()
    except ReferFormatError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged pickle fails in many ways; each is "not a refs pickle"
        raise ReferFormatError(f"{path}: not a readable refs pickle ({type(err).__name__}: {err})") from err
    if not isinstance(refs, list):
        raise ReferFormatError(f"{path}: expected a list of ref dicts, found {type(refs).__name__}")
    for position, ref in enumerate(refs):
        check_ref(ref, f"{path}: ref #{position}")
    return refs


def check_ref(ref, where: str) -> None:
    """A ref dict: the REF_KEYS, int ids, a str split and a list of sentences with `sent_id` and `tokens` (words)."""
    missing = [k for k in REF_KEYS if not isinstance(ref, dict) or k not in ref]
    if missing:
        raise ReferFormatError(f"{where} lacks keys {missing}")
    where = f"{where} (ref_id {ref['ref_id']!r})"
    if not all(isinstance(ref[k], int) for k in ("ref_id", "ann_id", "image_id")) or not isinstance(ref["split"], str):
        raise ReferFormatError(f"{where}: ref_id, ann_id and image_id must be integers and split a string")
    sentences = ref["sentences"]
    if not isinstance(sentences, list) or not all(
            isinstance(s, dict) and isinstance(s.get("sent_id"), int) and isinstance(s.get("tokens"), list)
            and all(isinstance(t, str) for t in s["tokens"]) for s in sentences):
        raise ReferFormatError(f"{where}: 'sentences' must be a list of {{sent_id: int, tokens: [str]}} dicts")


def split_matches(ref_split: str, wanted: str) -> bool:
    """The refer API's rule: testA/testB/testC by letter, "test" by substring, anything else exactly."""
    if wanted in ("testA", "testB", "testC"):
        return wanted[-1] in ref_split
    if wanted in ("testAB", "testBC", "testAC"):
        return ref_split in wanted
    if wanted == "test":
        return "test" in ref_split
    return ref_split == wanted


def load_coco_quietly(path: str) -> COCO:
    """pycocotools COCO for an instance file, its progress prints sent to the log; a missing file is named."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"COCO instance file not found: {path}")
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            coco = COCO(path)
    except (ValueError, KeyError, TypeError, AssertionError) as err:
        raise ReferFormatError(f"{path}: not a COCO instance file ({err!r})") from err
    log.debug("%s: %s", path, captured.getvalue().strip())
    return coco


class Refer:
    """RefCOCO-family annotations: `Refer(data_root, "refcoco+", "unc")` reads `<data_root>/refcoco+/refs(unc).p`
    and `<data_root>/refcoco+/instances.json`.

    Attributes: `refs` (ref_id -> ref), `coco` (pycocotools COCO of instances.json), `refs_file`, `instances_file`.
    """

    def __init__(self, data_root: str, dataset: str = "refcoco+", split_by: str = "unc"):
        folder = os.path.join(data_root, dataset)
        self.refs_file = os.path.join(folder, f"refs({split_by}).p")
        self.instances_file = os.path.join(folder, "instances.json")
        ref_list = load_refs_pickle(self.refs_file)
        self.coco = load_coco_quietly(self.instances_file)
        self.refs: dict[int, dict] = {}
        for ref in ref_list:
            if ref["ann_id"] not in self.coco.anns:
                raise ReferFormatError(f"{self.refs_file}: ref_id {ref['ref_id']} points at ann_id {ref['ann_id']}, "
                                       f"which is not in {self.instances_file}")
            if ref["image_id"] not in self.coco.imgs:
                raise ReferFormatError(f"{self.refs_file}: ref_id {ref['ref_id']} points at image_id "
                                       f"{ref['image_id']}, which is not in {self.instances_file}")
            if ref["ref_id"] in self.refs:
                raise ReferFormatError(f"{self.refs_file}: ref_id {ref['ref_id']} appears twice")
            self.refs[ref["ref_id"]] = ref
        log.info("%s: %d refs over %d images", self.refs_file, len(self.refs), len(self.coco.imgs))

    def get_ref_ids(self, split: str | None = None) -> list[int]:
        """Ref ids in file order, restricted to `split` (refer-API matching; see the module docstring)."""
        return [rid for rid, ref in self.refs.items() if split is None or split_matches(ref["split"], split)]

    def load_refs(self, ref_ids: Iterable[int]) -> list[dict]:
        return [self.ref(rid) for rid in ref_ids]

    def ref(self, ref_id: int) -> dict:
        if ref_id not in self.refs:
            raise KeyError(f"{self.refs_file}: no ref with ref_id {ref_id}")
        return self.refs[ref_id]

    def get_ref_box(self, ref_id: int) -> list[float]:
        """[x, y, w, h] of the annotation the ref points at (original pixels)."""
        return [float(v) for v in self.coco.anns[self.ref(ref_id)["ann_id"]]["bbox"]]

    def sentences(self, ref_id: int) -> list[dict]:
        """The ref's sentence dicts ({sent_id, raw, sent, tokens})."""
        return list(self.ref(ref_id)["sentences"])

    def image_size(self, image_id: int) -> tuple[int, int]:
        """(width, height) of an image from instances.json."""
        image = self.coco.imgs[image_id]
        if "width" not in image or "height" not in image:
            raise ReferFormatError(f"{self.instances_file}: image {image_id} has no width/height")
        return int(image["width"]), int(image["height"])
