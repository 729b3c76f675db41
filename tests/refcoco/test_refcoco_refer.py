"""The refer-format reader on the toy world, checked against the raw files; a broken ref and an unsafe pickle."""
from __future__ import annotations

import datetime
import json
import os
import pickle
import shutil

import pytest

from refcoco.refer import Refer, ReferFormatError, load_refs_pickle, split_matches


def raw_refs(toy_root):
    with open(os.path.join(toy_root, "coco", "refcoco+", "refs(unc).p"), "rb") as f:
        return pickle.load(f)  # the test's own trusted copy of the file


def test_reader_matches_the_raw_files(toy_root):
    refer = Refer(os.path.join(toy_root, "coco"))
    refs = raw_refs(toy_root)
    with open(os.path.join(toy_root, "coco", "refcoco+", "instances.json")) as f:
        anns = {a["id"]: a for a in json.load(f)["annotations"]}
    for split in ("train", "val", "testA", "testB"):
        assert refer.get_ref_ids(split) == [r["ref_id"] for r in refs if r["split"] == split]
    assert sorted(refer.get_ref_ids("test")) == sorted(refer.get_ref_ids("testA") + refer.get_ref_ids("testB"))
    assert len(refer.get_ref_ids()) == len(refs)
    for ref in refs:
        assert refer.get_ref_box(ref["ref_id"]) == anns[ref["ann_id"]]["bbox"]
        assert [s["sent_id"] for s in refer.sentences(ref["ref_id"])] == ref["sent_ids"]


def test_split_rule_of_the_refer_api():
    assert split_matches("testA", "testA") and not split_matches("testB", "testA")
    assert split_matches("testB", "test") and not split_matches("val", "test")
    assert split_matches("train", "train") and not split_matches("train", "val")


def copy_refcoco(toy_root, tmp_path) -> str:
    target = tmp_path / "coco" / "refcoco+"
    shutil.copytree(os.path.join(toy_root, "coco", "refcoco+"), target)
    return str(target)


def test_ref_with_missing_annotation_names_ref_and_file(toy_root, tmp_path):
    folder = copy_refcoco(toy_root, tmp_path)
    refs = raw_refs(toy_root)
    refs[3]["ann_id"] = 987654321
    with open(os.path.join(folder, "refs(unc).p"), "wb") as f:
        pickle.dump(refs, f, protocol=2)
    with pytest.raises(ReferFormatError) as err:
        Refer(str(tmp_path / "coco"))
    message = str(err.value)
    assert f"ref_id {refs[3]['ref_id']}" in message and "987654321" in message
    assert "refs(unc).p" in message and "instances.json" in message


def test_unpickler_refuses_non_builtin_globals(toy_root, tmp_path):
    folder = copy_refcoco(toy_root, tmp_path)
    path = os.path.join(folder, "refs(unc).p")
    refs = raw_refs(toy_root)
    refs[0]["sentences"][0]["when"] = datetime.date(2020, 1, 1)  # pickled as a reference to datetime.date
    with open(path, "wb") as f:
        pickle.dump(refs, f, protocol=2)
    with pytest.raises(ReferFormatError, match=r"refs\(unc\)\.p.*datetime\.date"):
        load_refs_pickle(path)


def test_python2_style_pickle_loads(toy_root, tmp_path):
    path = str(tmp_path / "refs(unc).p")
    refs = raw_refs(toy_root)
    with open(path, "wb") as f:
        pickle.dump(refs, f, protocol=0)  # text protocol, as old Python-2 dumps
    assert load_refs_pickle(path) == refs
