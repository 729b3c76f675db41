"""Config loading: every original YAML against its raw content and the fact sheet's table, plus the error paths."""
import copy
import pickle
from pathlib import Path

import pytest
import yaml

from common.config import (
    ConfigError,
    ConfigNode,
    cfg_name,
    dataset_sections,
    dump_config,
    get_default_config,
    load_config,
)
from itm.config import add_itm_defaults
from pretrain.config import add_pretrain_defaults
from refcoco.config import add_refcoco_defaults
from retrieval.config import add_retrieval_defaults
from vcr.config import add_vcr_defaults
from vqa.config import add_vqa_defaults

ROOT = Path(__file__).resolve().parents[2]
CFGS = ROOT / "cfgs"
TASK_DEFAULTS = {
    "pretrain": add_pretrain_defaults,
    "vcr": add_vcr_defaults,
    "vqa": add_vqa_defaults,
    "refcoco": add_refcoco_defaults,
    "itm": add_itm_defaults,  # the worked example of docs/NEW_TASK.md
    "retrieval": add_retrieval_defaults,
}
ALL_YAMLS = sorted(CFGS.glob("*/*.yaml"))


def load(rel_path: str, overrides=()):
    path = CFGS / rel_path
    return load_config(path, overrides, TASK_DEFAULTS[path.parent.name])


def write(tmp_path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_matches_raw(value, raw, key: str):
    """Every leaf written in the YAML is what the loaded config holds (after the original's quirks)."""
    leaf = key.split(".")[-1]
    if leaf == "LR_STEP" and isinstance(raw, str):
        assert value == tuple(float(x) for x in raw.split(",")), key
    elif leaf == "LOSS_LOGGERS":
        assert value == [tuple(item.split(",")) for item in raw], key
    elif isinstance(raw, dict):
        for sub_key, sub_raw in raw.items():
            assert_matches_raw(value[sub_key], sub_raw, f"{key}.{sub_key}")
    elif isinstance(raw, list) and raw and isinstance(raw[0], dict):
        assert len(value) == len(raw), key
        for i, entry in enumerate(raw):
            assert_matches_raw(value[i], entry, f"{key}[{i}]")
    elif isinstance(raw, list):
        assert list(value) == raw, key
    else:
        assert value == raw and (type(value) is type(raw) or isinstance(value, float)), key


def test_all_eighteen_originals_are_present():
    names = {f"{p.parent.name}/{p.name}" for p in ALL_YAMLS}
    assert len([n for n in names if "toy" not in n]) == 18
    assert "vgp" not in {p.parent.name for p in ALL_YAMLS}


@pytest.mark.parametrize("path", ALL_YAMLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_yaml_loads_and_holds_its_raw_values(path):
    assert path.parent.name in TASK_DEFAULTS, f"no task defaults for folder {path.parent.name}"
    cfg = load_config(path, add_task_defaults=TASK_DEFAULTS[path.parent.name])
    assert cfg.is_frozen
    raw = yaml.safe_load(path.read_text())
    for key, raw_value in raw.items():
        assert_matches_raw(cfg[key], raw_value, key)


# The per-yaml table of the fact sheet: (per-GPU batch, GPUs from the file name, accumulation) and LR x total batch.
SHEET = [
    ("vcr/base_q2a_4x16G_fp32.yaml", "SGD", 7e-5, 4, 4, 4, 4.48e-3, "step", 20),
    ("vcr/large_q2a_16x16G_fp16.yaml", "SGD", 7e-5, 4, 16, 1, 4.48e-3, "step", 20),
    ("vqa/base_4x16G_fp32.yaml", "AdamW", 6.25e-7, 64, 4, 1, 1.6e-4, "triangle", 5),
    ("vqa/large_4x16G_fp32.yaml", "AdamW", 6.25e-7, 16, 4, 4, 1.6e-4, "triangle", 5),
    ("refcoco/base_gt_boxes_4x16G.yaml", "AdamW", 8e-7, 4, 4, 2, 2.56e-5, "triangle", 20),
    ("refcoco/large_detected_regions_4x16G.yaml", "AdamW", 8e-7, 2, 4, 4, 2.56e-5, "triangle", 20),
    ("pretrain/base_e2e_16x16G_fp16.yaml", "AdamW", 1e-7, [8, 8], 16, 1, 2.56e-5, "triangle", 10),
    ("pretrain/large_e2e_16x16G_fp16.yaml", "AdamW", 1e-7, [4, 4], 16, 2, 2.56e-5, "triangle", 10),
    ("pretrain/base_prec_withouttextonly_4x16G_fp32.yaml", "AdamW", 1e-7, 64, 4, 1, 2.56e-5, "triangle", 10),
]


@pytest.mark.parametrize("rel, optimizer, lr, batch, gpus, accum, scaled_lr, schedule, epochs", SHEET)
def test_original_values_match_the_sheet_table(rel, optimizer, lr, batch, gpus, accum, scaled_lr, schedule, epochs):
    cfg = load(rel)
    assert (cfg.TRAIN.OPTIMIZER, cfg.TRAIN.LR_SCHEDULE, cfg.TRAIN.END_EPOCH) == (optimizer, schedule, epochs)
    assert cfg.TRAIN.LR == pytest.approx(lr, rel=1e-12)
    assert cfg.TRAIN.BATCH_IMAGES == batch and cfg.TRAIN.GRAD_ACCUMULATE_STEPS == accum
    per_gpu = sum(batch) if isinstance(batch, list) else batch
    assert cfg.TRAIN.LR * per_gpu * gpus * accum == pytest.approx(scaled_lr, rel=1e-9)


def test_specific_original_values():
    vcr = load("vcr/base_q2a_4x16G_fp32.yaml")
    assert vcr.TRAIN.LR_STEP == (14.0, 18.0) and vcr.TRAIN.MOMENTUM == 0.9 and vcr.TRAIN.CLIP_GRAD_NORM == 10.0
    assert vcr.DATASET.TASK == "Q2A" and vcr.DATASET.ONLY_USE_RELEVANT_DETS is False
    assert vcr.NETWORK.CLASSIFIER_TYPE == "1fc" and vcr.NETWORK.CLASSIFIER_SIGMOID is True
    assert vcr.NETWORK.VLBERT.object_word_embed_mode == 2 and vcr.NETWORK.IMAGE_SEMANTIC is False
    assert vcr.NETWORK.CNN_LOSS_TOP is True and vcr.NETWORK.PARTIAL_PRETRAIN_SEGMB_INIT is True
    assert vcr.SCALES == (600, 1200)
    assert load("vcr/large_qa2r_4x16G_fp16.yaml").TRAIN.FP16_LOSS_SCALE == "dynamic"

    vqa = load("vqa/base_4x16G_fp32.yaml")
    assert vqa.TRAIN.CLIP_GRAD_NORM == 1.0 and vqa.TRAIN.WARMUP_STEPS == 500
    assert vqa.DATASET.BOXES == "10-100ada" and vqa.DATASET.USE_IMDB is False
    assert vqa.NETWORK.IMAGE_FEAT_PRECOMPUTED is True and vqa.NETWORK.CLASSIFIER_TYPE == "mlm"
    assert vqa.NETWORK.PARTIAL_PRETRAIN.endswith("vl-bert-base-prec.model")

    ref = load("refcoco/base_detected_regions_4x16G.yaml")
    boxes = (ref.DATASET.TRAIN_BOXES, ref.DATASET.VAL_BOXES, ref.DATASET.TEST_BOXES)
    assert boxes == ("proposal+gt", "proposal", "proposal")
    assert ref.DATASET.DATASET == "refcoco+" and ref.TRAIN.ASPECT_GROUPING is True
    assert ref.NETWORK.CLASSIFIER_DROPOUT == 0.0 and ref.NETWORK.ENABLE_CNN_REG_LOSS is False

    pre = load("pretrain/base_e2e_16x16G_fp16.yaml")
    assert pre.NETWORK.VLBERT.with_pooler is False and pre.NETWORK.WITH_REL_LOSS is False
    assert pre.TRAIN.WARMUP_STEPS == 16000 and pre.TRAIN.FP16 is True
    assert pre.NETWORK.PIXEL_MEANS == (102.9801, 115.9465, 122.7717)


def test_task_defaults_differ_as_in_the_original():
    vcr, vqa = get_default_config(add_vcr_defaults), get_default_config(add_vqa_defaults)
    ref, pre = get_default_config(add_refcoco_defaults), get_default_config(add_pretrain_defaults)
    assert [c.NETWORK.VLBERT.object_word_embed_mode for c in (pre, vcr, vqa, ref)] == [2, 1, 2, 2]
    assert [c.NETWORK.VLBERT.with_pooler for c in (pre, vcr, vqa, ref)] == [True, True, False, False]
    assert [c.NETWORK.IMAGE_SEMANTIC for c in (pre, vcr, vqa, ref)] == [False, True, False, False]
    assert [c.NETWORK.ENABLE_CNN_REG_LOSS for c in (pre, vcr, vqa, ref)] == [True, True, True, False]
    assert [c.DATASET.LABEL_INDEX_IN_BATCH for c in (pre, vcr, vqa, ref)] == [-1, 7, -1, -1]
    assert vqa.DATASET.BOXES == "36" and vqa.DATASET.ANSWER_VOCAB_SIZE == 3129 and vqa.DATASET.USE_IMDB is True
    assert "BOXES" not in vcr.DATASET and "QA_ONE_SENT" not in vqa.NETWORK and "SEQ_LEN" not in ref.DATASET
    assert "ANSWER_VOCAB_FILE" not in vcr.DATASET and "from_scratch" not in vcr.NETWORK.VLBERT
    assert pre.NETWORK.VLBERT.visual_region_classes == 1601 and pre.DATASET.MIN_SEQ_LEN == 0
    loggers = [("relationship_loss", "RelLoss"), ("mlm_loss", "MLMLoss"), ("mvrc_loss", "MVRCLoss")]
    assert pre.TRAIN.LOSS_LOGGERS == loggers
    train = pre.TRAIN
    modern = (train.BF16, train.NO_DECAY_NORM_BIAS, train.ADAMW_ORIGINAL, train.COMPILE, train.GLOBAL_BATCH,
              train.MAX_NONFINITE_STEPS, train.PIN_MEMORY, train.PERSISTENT_WORKERS)
    assert modern == (False, False, True, False, 0, 3, True, True)
    assert pre.NETWORK.GRADIENT_CHECKPOINTING is False and pre.DATASET.SKIP_UNREADABLE_IMAGES is False
    assert pre.CHECKPOINT_KEEP == 0


# ----- errors -----------------------------------------------------------------------------------------------
def test_misspelled_key_names_file_key_and_suggestion(tmp_path):
    path = write(tmp_path, "TRAIN:\n  LRR: 0.1\n", "typo.yaml")
    with pytest.raises(ConfigError, match=r"typo\.yaml: unknown key TRAIN\.LRR \(did you mean TRAIN\.LR\?\)"):
        load_config(path)


def test_misspelled_nested_and_top_level_keys(tmp_path):
    nested = r"unknown key NETWORK\.VLBERT\.hiden_size \(did you mean NETWORK\.VLBERT\.hidden_size\?\)"
    with pytest.raises(ConfigError, match=nested):
        load_config(write(tmp_path, "NETWORK:\n  VLBERT:\n    hiden_size: 32\n"))
    with pytest.raises(ConfigError, match=r"unknown key OUTPUT_PAHT \(did you mean OUTPUT_PATH\?\)"):
        load_config(write(tmp_path, "OUTPUT_PAHT: x\n"))
    with pytest.raises(ConfigError, match=r"unknown key DATASET\.BOXES"):  # a VQA key is not a VCR key
        load_config(write(tmp_path, "DATASET:\n  BOXES: '36'\n"), add_task_defaults=add_vcr_defaults)


@pytest.mark.parametrize(
    "text, message",
    [
        ("TRAIN:\n  LR: fast\n", r"bad\.yaml: key TRAIN\.LR expects float, found str \('fast'\)"),
        ("TRAIN:\n  LR:\n    a: 1\n", r"bad\.yaml: key TRAIN\.LR expects .*not a section, found dict"),
        ("NETWORK: 3\n", r"bad\.yaml: key NETWORK expects a mapping, found int"),
        ("TRAIN:\n  SHUFFLE: 1\n", r"bad\.yaml: key TRAIN\.SHUFFLE expects bool, found int"),
        ("TRAIN:\n  END_EPOCH: 2.5\n", r"bad\.yaml: key TRAIN\.END_EPOCH expects int, found float"),
        ("SCALES: 600\n", r"bad\.yaml: key SCALES expects a list, found int"),
        ("TRAIN:\n  LR_STEP: 'a,b'\n", r"bad\.yaml: key TRAIN\.LR_STEP expects comma-separated"),
        ("TRAIN:\n  LOSS_LOGGERS: ['ans_loss']\n", r"bad\.yaml: key TRAIN\.LOSS_LOGGERS expects"),
        ("TRAIN:\n  FP16_LOSS_SCALE: auto\n", r"bad\.yaml: key TRAIN\.FP16_LOSS_SCALE expects a number or \"dynamic\""),
    ],
)
def test_wrong_types_name_file_key_and_types(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text, "bad.yaml"))


def test_accepted_conversions(tmp_path):
    cfg = load_config(write(tmp_path, "TRAIN:\n  CLIP_GRAD_NORM: 10\n  LR: 7e-5\nSCALES: [600, 1000]\n"))
    assert cfg.TRAIN.CLIP_GRAD_NORM == 10.0 and isinstance(cfg.TRAIN.CLIP_GRAD_NORM, float)
    assert cfg.TRAIN.LR == 7e-5  # PyYAML reads 7e-5 as a string
    assert cfg.SCALES == (600, 1000) and isinstance(cfg.SCALES, tuple)


def test_missing_or_non_mapping_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nowhere\.yaml: config file not found"):
        load_config(tmp_path / "nowhere.yaml")
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping .* found list"):
        load_config(write(tmp_path, "- 1\n- 2\n", "list.yaml"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["TRAIN.GRAD_ACCUMULATE_STEPS", "0"], r"GRAD_ACCUMULATE_STEPS must be >= 1"),
        (["TRAIN.LR_STEP", "18,14"], r"LR_STEP must be increasing"),
        (["TRAIN.FP16", "true", "TRAIN.BF16", "true"], r"FP16 and TRAIN\.BF16"),
        (["TRAIN.LR_SCHEDULE", "cosine"], r"LR_SCHEDULE must be one of"),
        (["TRAIN.OPTIMIZER", "Adagrad"], r"OPTIMIZER must be one of"),
        (["TRAIN.BEGIN_EPOCH", "3", "TRAIN.END_EPOCH", "2"], r"END_EPOCH \(2\) must be >= TRAIN\.BEGIN_EPOCH \(3\)"),
        (["TRAIN.BATCH_IMAGES", "[2, 2]"], r"TRAIN\.BATCH_IMAGES is a list of 2 but DATASET is a single section"),
        (["VAL.BATCH_IMAGES", "[]"], r"VAL\.BATCH_IMAGES expects an int or a list of ints"),
    ],
)
def test_consistency_rules(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, "TRAIN:\n  END_EPOCH: 5\n"), overrides)


# ----- command line -----------------------------------------------------------------------------------------
def test_command_line_overrides_apply_and_are_type_checked():
    cfg = load("vcr/base_q2a_4x16G_fp32.yaml", ["TRAIN.LR", "0.5", "NETWORK.VLBERT.hidden_size", "32",
                                                  "TRAIN.LR_STEP", "10,12", "TRAIN.FP16", "true", "OUTPUT_PATH", ""])
    assert (cfg.TRAIN.LR, cfg.NETWORK.VLBERT.hidden_size, cfg.TRAIN.LR_STEP) == (0.5, 32, (10.0, 12.0))
    assert cfg.TRAIN.FP16 is True and cfg.OUTPUT_PATH == ""
    assert cfg.NETWORK.VLBERT.num_hidden_layers == 12  # the rest of the section is kept
    with pytest.raises(ConfigError, match=r"command line: key NETWORK\.VLBERT\.hidden_size expects int, found str"):
        load("vcr/base_q2a_4x16G_fp32.yaml", ["NETWORK.VLBERT.hidden_size", "big"])
    with pytest.raises(ConfigError, match=r"command line: unknown key TRAIN\.LRR \(did you mean TRAIN\.LR\?\)"):
        load("vcr/base_q2a_4x16G_fp32.yaml", ["TRAIN.LRR", "0.1"])
    assert load("vcr/base_q2a_4x16G_fp32.yaml", "TRAIN.LR 0.25 TRAIN.END_EPOCH 3").TRAIN.END_EPOCH == 3
    with pytest.raises(ConfigError, match=r"odd count"):
        load("vcr/base_q2a_4x16G_fp32.yaml", ["TRAIN.LR"])


def test_overrides_reach_entries_of_a_dataset_list():
    cfg = load("pretrain/base_e2e_16x16G_fp16.yaml", ["DATASET.1.SEQ_LEN", "32", "TRAIN.BATCH_IMAGES", "[2, 3]"])
    assert cfg.DATASET[1].SEQ_LEN == 32 and cfg.DATASET[0].SEQ_LEN == 64 and cfg.TRAIN.BATCH_IMAGES == [2, 3]
    with pytest.raises(ConfigError, match=r"DATASET is a list; index it, e\.g\. DATASET\.0\.SEQ_LEN"):
        load("pretrain/base_e2e_16x16G_fp16.yaml", ["DATASET.SEQ_LEN", "32"])
    with pytest.raises(ConfigError, match=r"TEST\.BATCH_IMAGES is a single int but DATASET lists 2 datasets"):
        load("pretrain/base_e2e_16x16G_fp16.yaml", ["TEST.BATCH_IMAGES", "4"])
    with pytest.raises(ConfigError, match=r"TRAIN\.BATCH_IMAGES is a list of 3 but DATASET lists 2 datasets"):
        load("pretrain/base_e2e_16x16G_fp16.yaml", ["TRAIN.BATCH_IMAGES", "[1, 2, 3]"])


# ----- original parsing quirks ------------------------------------------------------------------------------
def test_lr_step_and_loss_loggers_quirks(tmp_path):
    text = "TRAIN:\n  LR_STEP: \"14,18\"\n  LOSS_LOGGERS:\n  - \"ans_loss,AnsLoss\"\n  - [cls_loss, ClsLoss]\n"
    cfg = load_config(write(tmp_path, text))
    assert cfg.TRAIN.LR_STEP == (14.0, 18.0)
    assert cfg.TRAIN.LOSS_LOGGERS == [("ans_loss", "AnsLoss"), ("cls_loss", "ClsLoss")]


def test_pretrain_dataset_list_entries_get_template_defaults():
    cfg = load("pretrain/base_e2e_16x16G_fp16.yaml")
    captions, corpus = dataset_sections(cfg)
    assert (captions.DATASET, corpus.DATASET) == ("conceptual_captions", "general_corpus")
    assert captions.IGNORE_DB_CACHE is False and corpus.IGNORE_DB_CACHE is True  # set in YAML vs template
    assert (captions.SEQ_LEN, captions.MIN_SEQ_LEN) == (64, 0) and (corpus.SEQ_LEN, corpus.MIN_SEQ_LEN) == (64, 64)
    assert corpus.ADD_IMAGE_AS_A_BOX is True and corpus.ROOT_PATH == "" and corpus.TASK == "Q2AR"
    assert set(captions) == set(corpus) == set(get_default_config(add_pretrain_defaults).DATASET)


def test_dataset_list_entries_are_validated_and_only_pretrain_accepts_a_list(tmp_path):
    path = write(tmp_path, "DATASET:\n- DATASET: a\n- SEQ_LENN: 3\n", "multi.yaml")
    message = r"multi\.yaml: unknown key DATASET\[1\]\.SEQ_LENN \(did you mean DATASET\[1\]\.SEQ_LEN\?\)"
    with pytest.raises(ConfigError, match=message):
        load_config(path, add_task_defaults=add_pretrain_defaults)
    with pytest.raises(ConfigError, match=r"multi\.yaml: key DATASET expects a mapping, found list"):
        load_config(path, add_task_defaults=add_vqa_defaults)


# ----- freezing, copies, dumps ------------------------------------------------------------------------------
def test_frozen_config_refuses_changes_at_any_depth():
    cfg = load("pretrain/base_e2e_16x16G_fp16.yaml")
    for change in (
        lambda: setattr(cfg.TRAIN, "LR", 1.0),
        lambda: cfg.__setitem__("MODULE", "x"),
        lambda: setattr(cfg.NETWORK.VLBERT, "hidden_size", 8),
        lambda: setattr(cfg.DATASET[0], "SEQ_LEN", 8),
        lambda: setattr(cfg, "NEW_KEY", 1),
        lambda: cfg.TRAIN.update(LR=1.0),
        lambda: cfg.TRAIN.pop("LR"),
        lambda: delattr(cfg.TRAIN, "LR"),
    ):
        with pytest.raises(ConfigError, match="frozen"):
            change()
    assert cfg.TRAIN.LR == 1e-7 and "NEW_KEY" not in cfg


def test_clone_is_a_mutable_independent_copy():
    cfg = load("vcr/base_q2a_4x16G_fp32.yaml")
    mutable = cfg.clone()
    mutable.TRAIN.LR = 1.0
    mutable.NETWORK.PARTIAL_PRETRAIN_PREFIX_CHANGES.append("a->b")
    assert cfg.TRAIN.LR == 7e-5 and len(cfg.NETWORK.PARTIAL_PRETRAIN_PREFIX_CHANGES) == 4
    assert isinstance(mutable.TRAIN, ConfigNode) and not mutable.is_frozen
    assert "freeze" not in cfg and "clone" not in cfg  # methods are not keys


def test_pickle_and_deepcopy_keep_values_and_frozen_state():
    cfg = load("pretrain/base_e2e_16x16G_fp16.yaml")
    for copied in (pickle.loads(pickle.dumps(cfg)), copy.deepcopy(cfg)):
        assert copied == cfg and copied.is_frozen and copied.DATASET[1].is_frozen
        assert copied.TRAIN.LOSS_LOGGERS[0] == ("mlm_loss_wvc", "MLMLossWVC") and copied.SCALES == (600, 1000)


def _only_plain_types(value) -> bool:
    if type(value) is dict:
        return all(isinstance(k, str) and _only_plain_types(v) for k, v in value.items())
    if type(value) is list:
        return all(_only_plain_types(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


@pytest.mark.parametrize("rel", ["pretrain/base_e2e_16x16G_fp16.yaml", "vcr/base_q2a_4x16G_fp32.yaml"])
def test_dump_then_load_gives_the_same_config(tmp_path, rel):
    cfg = load(rel)
    assert _only_plain_types(cfg.to_dict())
    dump_config(cfg, tmp_path / "out" / "config.yaml")
    again = load_config(tmp_path / "out" / "config.yaml", add_task_defaults=TASK_DEFAULTS[rel.split("/")[0]])
    assert again == cfg
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["config.yaml"]  # no temp file left behind


def test_cfg_name_is_the_file_stem():
    assert cfg_name("cfgs/vcr/base_q2a_4x16G_fp32.yaml") == "base_q2a_4x16G_fp32"


def test_docs_describe_every_key():
    docs = (ROOT / "docs" / "CONFIG.md").read_text()
    missing = set()
    for add_defaults in TASK_DEFAULTS.values():
        cfg = get_default_config(add_defaults)
        missing |= {key for key in _leaf_keys(cfg) if f"`{key}`" not in docs}
    assert not missing, f"keys missing from docs/CONFIG.md: {sorted(missing)}"


def _leaf_keys(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, ConfigNode):
            yield from _leaf_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"
