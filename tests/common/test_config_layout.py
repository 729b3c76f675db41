"""Where each config key lives: shared, in one task's defaults, or in the no-effect table; checked against the code
that reads the keys (a scan of the source tree) and against docs/CONFIG.md."""
import importlib
import re
from pathlib import Path

import pytest

from common.config import NO_EFFECT_KEYS, ConfigNode, get_default_config, no_effect_keys
from common.config_defaults import common_defaults

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("pretrain", "vcr", "vqa", "refcoco", "itm", "retrieval")
DEFAULTS = {task: get_default_config(getattr(importlib.import_module(f"{task}.config"), f"add_{task}_defaults"))
            for task in TASKS}

# Each task's own keys, written out by hand: the keys that only this task's code reads.
OWN_KEYS = {
    "pretrain": {"DATASET.SEQ_LEN", "DATASET.MIN_SEQ_LEN", "NETWORK.WITH_REL_LOSS",
                 "NETWORK.WITH_MLM_LOSS", "NETWORK.WITH_MVRC_LOSS", "NETWORK.MLM_LOSS_NORM_IN_BATCH_FIRST",
                 "NETWORK.MVRC_LOSS_NORM_IN_BATCH_FIRST", "NETWORK.MASK_RAW_PIXELS", "NETWORK.VLBERT.from_scratch",
                 "NETWORK.VLBERT.pos_embedding_frozen", "NETWORK.VLBERT.visual_region_classes",
                 "DATASET.FORMAT", "DATASET.TRAIN_SHARDS", "DATASET.VAL_SHARDS", "DATASET.TEST_SHARDS",
                 "DATASET.SAMPLES_PER_EPOCH", "DATASET.SHUFFLE_BUFFER", "DATASET.RESAMPLE_SHARDS",
                 "DATASET.MAX_BAD_SAMPLE_FRACTION"},
    "vcr": {"DATASET.TASK", "DATASET.ONLY_USE_RELEVANT_DETS", "DATASET.MASK_SIZE", "DATASET.SEQ_LEN", "NETWORK.BLIND",
            "NETWORK.NO_OBJ_ATTENTION", "NETWORK.PARTIAL_PRETRAIN_SEGMB_INIT", "NETWORK.QA_ONE_SENT",
            "NETWORK.CNN_REG_DROPOUT", "NETWORK.CNN_LOSS_TOP", "NETWORK.CNN_LOSS_WEIGHT", "NETWORK.ANS_LOSS_WEIGHT",
            "NETWORK.ANSWER_FIRST", "NETWORK.LOAD_REL_HEAD", "NETWORK.CLASSIFIER_SIGMOID",
            "NETWORK.CLASSIFIER_SIGMOID_LOSS_POSITIVE_WEIGHT"},
    "vqa": {"DATASET.ANSWER_VOCAB_FILE", "DATASET.ANSWER_VOCAB_SIZE", "DATASET.BOXES", "DATASET.USE_IMDB",
            "DATASET.MAX_NO_TARGET_FRACTION",
            "NETWORK.CLASSIFIER_PRETRAINED"},
    "refcoco": {"DATASET.TRAIN_BOXES", "DATASET.VAL_BOXES", "DATASET.TEST_BOXES", "DATASET.PROPOSAL_SOURCE"},
    "itm": {"DATASET.SEQ_LEN", "DATASET.NEGATIVE_PROB"},
    "retrieval": {"DATASET.ANNOTATION_FILE", "DATASET.IMAGE_FOLDER", "DATASET.BOX_FOLDER", "DATASET.SEQ_LEN",
                  "NETWORK.ITC_DIM", "NETWORK.ITC_TEMPERATURE"},
}
# The keys that were shared defaults before and only VCR reads.
MOVED_TO_VCR = ("DATASET.TASK", "DATASET.ONLY_USE_RELEVANT_DETS", "DATASET.MASK_SIZE", "NETWORK.BLIND",
                "NETWORK.NO_OBJ_ATTENTION", "NETWORK.CNN_LOSS_WEIGHT", "NETWORK.ANS_LOSS_WEIGHT",
                "NETWORK.CLASSIFIER_SIGMOID", "NETWORK.CLASSIFIER_SIGMOID_LOSS_POSITIVE_WEIGHT")


def leaf_keys(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, ConfigNode):
            yield from leaf_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


SHARED = set(leaf_keys(common_defaults()))


def real_keys(task: str) -> set[str]:
    return set(leaf_keys(DEFAULTS[task])) - set(no_effect_keys(DEFAULTS[task]))


# ----- the layout ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_each_task_defaults_hold_exactly_its_own_keys(task):
    assert real_keys(task) - SHARED == OWN_KEYS[task]
    assert SHARED <= real_keys(task)


def test_vcr_only_keys_left_the_shared_defaults():
    assert not SHARED & set(MOVED_TO_VCR)
    assert set(MOVED_TO_VCR) <= real_keys("vcr")
    for task in ("pretrain", "vqa", "refcoco", "itm"):  # the original declared them for every task: still accepted
        assert set(MOVED_TO_VCR) <= set(no_effect_keys(DEFAULTS[task])), task


def test_no_effect_keys_are_not_in_the_shared_defaults_and_hold_their_table_default():
    assert not SHARED & set(NO_EFFECT_KEYS)
    for task, cfg in DEFAULTS.items():
        for key, default in no_effect_keys(cfg).items():
            value = cfg
            for part in key.split("."):
                value = value[part]
            assert value == default, (task, key)
            assert default == NO_EFFECT_KEYS[key].default or (task, key) == ("vcr", "DATASET.LABEL_INDEX_IN_BATCH")


# ----- the code that reads the keys ---------------------------------------------------------------------------
# `x.NAME` (not `f().NAME`: `import_module(...).TASK` is the task plug-in) or "NAME"; and f-string templates such as
# f"{split}_IMAGE_SET" or f"visual_scale_{which}_init" as (text before, text after) the braces.
_ACCESS = re.compile(r"(?<!\))\.(\w+)|[\"'](\w+)[\"']")
_TEMPLATE = re.compile(r"(\w*)\{[^{}]*\}(\w*)")


def _code_files() -> dict[str, tuple[set[str], set[tuple[str, str]]]]:
    """Names read and f-string templates of each source file (not tests, not the files that declare the keys)."""
    files = {}
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        skipped = any(part.startswith(".") or part in ("tests", "output") for part in rel.parts)
        if path.suffix not in (".py", ".ipynb") or skipped:
            continue
        if rel.parts[:2] == ("data", "toy") or re.fullmatch(r"common/config\w*\.py|\w+/config\.py", rel.as_posix()):
            continue
        text = path.read_text(encoding="utf-8")
        names = {a or b for a, b in _ACCESS.findall(text)}
        files[rel.as_posix()] = (names, {pair for pair in _TEMPLATE.findall(text) if any(pair)})
    return files


CODE = _code_files()


def _fills(template: tuple[str, str], leaf: str) -> bool:
    """f"{split}_IMAGE_SET" can make VAL_IMAGE_SET: the braces stand for one underscore-free part of the name."""
    left, right = template
    if (left and not left.endswith("_")) or (right and not right.startswith("_")):
        return False
    middle = leaf[len(left):len(leaf) - len(right)] if leaf.startswith(left) and leaf.endswith(right) else ""
    return bool(middle) and "_" not in middle and len(leaf) > len(left) + len(right)


def readers(key: str, dynamic: bool = True) -> list[str]:
    """Source files that read the key's last part, literally (and, with dynamic, through an f-string)."""
    leaf = key.split(".")[-1]
    return [path for path, (names, templates) in CODE.items()
            if leaf in names or (dynamic and any(_fills(t, leaf) for t in templates))]


def folder(path: str) -> str:
    return path.split("/")[0]


def test_the_scan_finds_known_readers():  # the scan itself must be able to see a read
    assert "vcr/task.py" in readers("DATASET.MASK_SIZE", dynamic=False)
    assert "refcoco/task.py" in readers("DATASET.TRAIN_BOXES")  # data[f"{section}_BOXES"]
    assert "common/model/vlbert.py" in readers("NETWORK.VLBERT.visual_scale_text_init")
    assert not any(folder(p) != "vcr" for p in readers("DATASET.TASK", dynamic=False))  # not `import_module().TASK`


def test_no_effect_keys_are_read_by_no_code():
    for key in NO_EFFECT_KEYS:
        defined_by = {task for task in TASKS if key in real_keys(task)}
        found = readers(key, dynamic=False)
        if not defined_by:
            assert not found, f"{key} has no effect, yet {found} read it"
        else:  # e.g. DATASET.MASK_SIZE: VCR reads it; another task's code must not
            wrong = [path for path in found if folder(path) in TASKS and folder(path) not in defined_by]
            assert not wrong, f"{key} has no effect outside {sorted(defined_by)}, yet {wrong} read it"


def test_shared_keys_are_read_by_shared_code_or_by_several_tasks():
    for key in SHARED:
        found = readers(key)
        tasks = {folder(path) for path in found if folder(path) in TASKS}
        shared = [path for path in found if folder(path) not in TASKS]
        assert shared or len(tasks) >= 2, f"{key} is a shared default but only {sorted(tasks)} read it: {found}"


@pytest.mark.parametrize("task", TASKS)
def test_every_key_of_the_schema_is_read_somewhere(task):
    unread = sorted(key for key in real_keys(task) if not readers(key))
    assert not unread, f"{task}: keys no code reads belong in NO_EFFECT_KEYS: {unread}"


# ----- docs/CONFIG.md -----------------------------------------------------------------------------------------
DOCS = (ROOT / "docs" / "CONFIG.md").read_text()


def _section(heading: str) -> str:
    start = DOCS.index(heading + "\n")
    level = heading.split(" ")[0]
    following = re.search(rf"^#{{2,{len(level)}}} ", DOCS[start + len(heading):], re.MULTILINE)
    return DOCS[start:start + len(heading) + following.start()] if following else DOCS[start:]


def _table(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        match = re.match(r"\| `([\w.]+)` \|(.*)\|$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


def test_docs_list_the_shared_keys():
    assert set(_table(_section("### Shared keys"))) == SHARED


@pytest.mark.parametrize("task", TASKS)
def test_docs_list_each_tasks_own_keys(task):
    assert set(_table(_section(f"#### {task} (`{task}/config.py`)"))) == OWN_KEYS[task]


def test_docs_list_the_no_effect_keys_and_the_tasks_that_accept_them():
    rows = _table(_section("### Keys accepted with no effect"))
    assert list(rows) == list(NO_EFFECT_KEYS)
    for key, (_, accepted_by, reason) in rows.items():
        expected = {task for task in TASKS if key in no_effect_keys(DEFAULTS[task])}
        if accepted_by == "all":
            listed = set(TASKS)
        elif accepted_by.startswith("all but "):
            listed = set(TASKS) - set(accepted_by[len("all but "):].split(", "))
        else:
            listed = set(accepted_by.split(", "))
        assert listed == expected, key
        assert reason.startswith(NO_EFFECT_KEYS[key].reason), key
        assert ("only the default is accepted" in reason) == NO_EFFECT_KEYS[key].fixed, key
