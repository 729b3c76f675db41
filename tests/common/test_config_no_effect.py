"""Keys accepted with no effect: loaded with exactly one warning naming them, refused where the schema says so; and
the frozen contract of ConfigNode (lists included)."""
import copy
import importlib
import logging
import pickle
from pathlib import Path

import pytest
import yaml

from common.config import (
    ConfigError,
    ConfigNode,
    accept_no_effect_keys,
    dump_config,
    get_default_config,
    load_config,
    no_effect_keys,
)
from common.config_node import FrozenList
from pretrain.config import add_pretrain_defaults
from vcr.config import add_vcr_defaults
from vqa.config import add_vqa_defaults

CFGS = Path(__file__).resolve().parents[2] / "cfgs"


def write(tmp_path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "common.config" and r.levelno == logging.WARNING]


def test_a_yaml_setting_no_effect_keys_loads_with_one_warning_naming_them(tmp_path, caplog):
    path = write(tmp_path, "NETWORK:\n  BERT_FROZEN: false\nDATASET:\n  MASK_SIZE: 7\nTRAIN:\n  LR: 0.5\n")
    with caplog.at_level(logging.WARNING, logger="common.config"):
        cfg = load_config(path, ["TEST.TEST_EPOCH", "3"], add_task_defaults=add_vqa_defaults)
    messages = warnings_of(caplog)
    assert len(messages) == 1
    assert messages[0].startswith(f"{path}: ignoring 3 key(s)")
    assert messages[0].endswith(": NETWORK.BERT_FROZEN, DATASET.MASK_SIZE, TEST.TEST_EPOCH (command line)")
    # the values are kept (a dump loads back the same), the rest of the file applies
    assert (cfg.NETWORK.BERT_FROZEN, cfg.DATASET.MASK_SIZE, cfg.TEST.TEST_EPOCH, cfg.TRAIN.LR) == (False, 7, 3, 0.5)


def test_no_warning_when_no_effect_keys_are_not_set(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="common.config"):
        load_config(write(tmp_path, "TRAIN:\n  LR: 0.5\n"), ["TRAIN.END_EPOCH", "2"], add_vqa_defaults)
    assert warnings_of(caplog) == []


@pytest.mark.parametrize("path", sorted(CFGS.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_yaml_gives_at_most_one_warning_and_toy_configs_none(path, caplog):
    task = path.parent.name
    add = getattr(importlib.import_module(f"{task}.config"), f"add_{task}_defaults")
    with caplog.at_level(logging.WARNING, logger="common.config"):
        load_config(path, add_task_defaults=add)
    assert len(warnings_of(caplog)) == (0 if path.name.startswith("toy") else 1)


def test_original_vqa_yaml_warning_lists_what_it_sets(caplog):
    with caplog.at_level(logging.WARNING, logger="common.config"):
        load_config(CFGS / "vqa" / "base_4x16G_fp32.yaml", add_task_defaults=add_vqa_defaults)
    listed = warnings_of(caplog)[0].split(": ")[-1].split(", ")
    assert listed == ["GPUS", "DATASET.LABEL_INDEX_IN_BATCH", "DATASET.APPEND_INDEX", "DATASET.ROOT_PATH",
                      "DATASET.CACHE_MODE", "DATASET.IGNORE_DB_CACHE", "DATASET.MASK_SIZE", "NETWORK.BERT_FROZEN",
                      "NETWORK.VLBERT.input_transform_type", "TEST.TEST_EPOCH"]


def test_pretrain_dataset_list_entries_report_their_index(caplog):
    with caplog.at_level(logging.WARNING, logger="common.config"):
        cfg = load_config(CFGS / "pretrain" / "toy_cpu.yaml", ["DATASET.1.MASK_SIZE", "7"], add_pretrain_defaults)
    assert warnings_of(caplog)[0].endswith(": DATASET.1.MASK_SIZE (command line)")
    assert (cfg.DATASET[0].MASK_SIZE, cfg.DATASET[1].MASK_SIZE) == (14, 7)


def test_a_vcr_key_is_ignored_for_vqa_where_the_original_declared_it_and_refused_where_not(tmp_path, caplog):
    # DATASET.ONLY_USE_RELEVANT_DETS moved to vcr/config.py; the original VQA config declared it: ignored, warned
    with caplog.at_level(logging.WARNING, logger="common.config"):
        load_config(write(tmp_path, "DATASET:\n  ONLY_USE_RELEVANT_DETS: false\n"), add_task_defaults=add_vqa_defaults)
    assert warnings_of(caplog)[0].endswith(": DATASET.ONLY_USE_RELEVANT_DETS")
    # NETWORK.QA_ONE_SENT / CNN_LOSS_TOP exist only for VCR: an unknown key for VQA
    with pytest.raises(ConfigError, match=r"vqa\.yaml: unknown key NETWORK\.QA_ONE_SENT"):
        load_config(write(tmp_path, "NETWORK:\n  QA_ONE_SENT: true\n", "vqa.yaml"), add_task_defaults=add_vqa_defaults)
    with pytest.raises(ConfigError, match=r"command line: unknown key NETWORK\.CNN_LOSS_TOP"):
        load_config(write(tmp_path, ""), ["NETWORK.CNN_LOSS_TOP", "true"], add_task_defaults=add_vqa_defaults)
    # for VCR the moved keys are real: set without a warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="common.config"):
        cfg = load_config(write(tmp_path, "DATASET:\n  ONLY_USE_RELEVANT_DETS: false\n"), [], add_vcr_defaults)
    assert warnings_of(caplog) == [] and cfg.DATASET.ONLY_USE_RELEVANT_DETS is False


@pytest.mark.parametrize("text, overrides, message", [
    ("DATASET:\n  CACHE_MODE: true\n", [], r"exp\.yaml: key DATASET\.CACHE_MODE only accepts False, found True"),
    ("", ["DATASET.QA2R_NOQ", "true"], r"command line: key DATASET\.QA2R_NOQ only accepts False, found True"),
    ("NETWORK:\n  FOR_MASK_VL_MODELING_PRETRAIN: true\n", [], r"key NETWORK\.FOR_MASK_VL_MODELING_PRETRAIN only"),
    ("NETWORK:\n  BERT_USE_LAYER: last\n", [], r"exp\.yaml: key NETWORK\.BERT_USE_LAYER expects int, found str"),
])
def test_no_effect_values_are_still_checked(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), overrides, add_task_defaults=add_vcr_defaults)


def test_dump_writes_no_effect_keys_only_where_the_experiment_changed_them(tmp_path, caplog):
    cfg = load_config(CFGS / "vqa" / "base_4x16G_fp32.yaml", add_task_defaults=add_vqa_defaults)
    dump_config(cfg, tmp_path / "config.yaml")
    dumped = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert "LABEL_INDEX_IN_BATCH" not in dumped["DATASET"] and "TEST_EPOCH" not in dumped["TEST"]  # at defaults
    assert dumped["NETWORK"]["BERT_FROZEN"] is False and dumped["DATASET"]["ROOT_PATH"] == "./"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="common.config"):
        again = load_config(tmp_path / "config.yaml", add_task_defaults=add_vqa_defaults)
    assert again == cfg
    listed = warnings_of(caplog)[0].split(": ")[-1].split(", ")
    assert sorted(listed) == ["DATASET.IGNORE_DB_CACHE", "DATASET.ROOT_PATH", "GPUS", "NETWORK.BERT_FROZEN"]
    assert "LABEL_INDEX_IN_BATCH" in cfg.to_dict()["DATASET"]  # checkpoints keep every key


def test_accept_no_effect_keys_refuses_unknown_names_and_real_keys():
    cfg = get_default_config()
    with pytest.raises(ValueError, match="NETWORK.NOT_A_KEY is not in NO_EFFECT_KEYS"):
        accept_no_effect_keys(cfg, "NETWORK.NOT_A_KEY")
    vcr = get_default_config(add_vcr_defaults)
    with pytest.raises(ValueError, match="DATASET.TASK is a key of this task's config"):
        accept_no_effect_keys(vcr, "DATASET.TASK")
    assert no_effect_keys(vcr)["DATASET.LABEL_INDEX_IN_BATCH"] == 7 and vcr.DATASET.LABEL_INDEX_IN_BATCH == 7


# ----- the frozen contract -------------------------------------------------------------------------------------
def test_lists_of_a_frozen_config_refuse_changes_and_compare_as_lists():
    cfg = load_config(CFGS / "vcr" / "base_q2a_4x16G_fp32.yaml", add_task_defaults=add_vcr_defaults)
    rules = cfg.NETWORK.PARTIAL_PRETRAIN_PREFIX_CHANGES
    before = list(rules)
    for change in (lambda: rules.append("a->b"), lambda: rules.__setitem__(0, "x"), lambda: rules.extend([]),
                   lambda: rules.pop(), lambda: rules.sort(), lambda: rules.__delitem__(0), lambda: rules.clear()):
        with pytest.raises(ConfigError, match="frozen"):
            change()
    with pytest.raises(ConfigError, match="frozen"):
        cfg.NETWORK.PARTIAL_PRETRAIN_PREFIX_CHANGES += ["a->b"]
    assert rules == before and isinstance(rules, list) and isinstance(rules, FrozenList)
    assert cfg.TRAIN.LOSS_LOGGERS == [("ans_loss", "AnsLoss"), ("cnn_regularization_loss", "CNNRegLoss")]
    mutable = cfg.clone()
    mutable.NETWORK.PARTIAL_PRETRAIN_PREFIX_CHANGES.append("a->b")
    assert type(mutable.NETWORK.PARTIAL_PRETRAIN_PREFIX_CHANGES) is list and len(rules) == len(before)


def test_pickle_and_deepcopy_keep_frozen_lists_and_the_no_effect_keys():
    cfg = load_config(CFGS / "pretrain" / "toy_cpu.yaml", add_task_defaults=add_pretrain_defaults)
    for copied in (pickle.loads(pickle.dumps(cfg)), copy.deepcopy(cfg)):
        assert copied == cfg and isinstance(copied.TRAIN.BATCH_IMAGES, FrozenList)
        assert dict(no_effect_keys(copied)) == dict(no_effect_keys(cfg)) and copied.DATASET[0].is_frozen
    alone = pickle.loads(pickle.dumps(cfg.TRAIN.BATCH_IMAGES))
    assert isinstance(alone, FrozenList) and alone == list(cfg.TRAIN.BATCH_IMAGES)


def test_a_frozen_list_put_into_a_mutable_node_becomes_a_plain_list():
    cfg = load_config(CFGS / "vcr" / "toy_q2a_cpu.yaml", add_task_defaults=add_vcr_defaults)
    node = ConfigNode()
    node.RULES = cfg.NETWORK.PARTIAL_PRETRAIN_PREFIX_CHANGES
    node.RULES.append("a->b")
    assert node.RULES[-1] == "a->b" and "a->b" not in cfg.NETWORK.PARTIAL_PRETRAIN_PREFIX_CHANGES
