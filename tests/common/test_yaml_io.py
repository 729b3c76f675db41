"""YAML reading (`common/yaml_io.py`): a key given twice and an alias bomb are refused, naming the file (and the key
and both lines); everything else reads exactly as `yaml.safe_load`; nothing else in the project parses YAML."""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from common.config import ConfigError, load_config, merge_overrides
from common.yaml_io import AliasExpansionError, DuplicateKeyError, load_yaml_file, load_yaml_text
from vqa.config import add_vqa_defaults

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_top_level_key_given_twice_names_the_file_the_key_and_both_lines(tmp_path):
    path = write(tmp_path, """\
        OUTPUT_PATH: ./out
        TRAIN:
          LR: 0.1
          END_EPOCH: 2
          LR: 0.001
        """)
    with pytest.raises(ConfigError) as err:
        load_config(path, add_task_defaults=add_vqa_defaults)
    assert str(err.value).startswith(f"{path}: key TRAIN.LR is given twice, at line 3 and at line 5")


def test_duplicates_inside_lists_and_section_names(tmp_path):
    assert "key NETWORK is given twice, at line 1 and at line 3" in str(pytest.raises(
        DuplicateKeyError, load_yaml_file, write(tmp_path, "NETWORK: {}\nTRAIN: {}\nNETWORK: {}\n")).value)
    text = "DATASET:\n- DATASET: a\n  SEQ_LEN: 1\n- DATASET: b\n  SEQ_LEN: 2\n  SEQ_LEN: 3\n"
    with pytest.raises(DuplicateKeyError, match=r"^cfg\.yaml: key DATASET\[1\]\.SEQ_LEN is given twice, at line 5 "
                                                 r"and at line 6"):
        load_yaml_text(text, "cfg.yaml")


def test_merge_keys_may_be_overridden_and_equal_values_under_different_keys_pass():
    text = "base: &b {LR: 0.1, WD: 0.0}\nrun:\n  <<: *b\n  LR: 0.2\nother: {LR: 0.1}\n"
    assert load_yaml_text(text) == yaml.safe_load(text) == {
        "base": {"LR": 0.1, "WD": 0.0}, "run": {"LR": 0.2, "WD": 0.0}, "other": {"LR": 0.1}}


def test_every_shipped_config_reads_as_safe_load():
    paths = sorted((ROOT / "cfgs").glob("*/*.yaml"))
    assert paths
    for path in paths:
        assert load_yaml_file(path) == yaml.safe_load(path.read_text()), path


def bomb(levels: int) -> str:
    """A list value whose aliases expand to 10**levels strings in a file of a few hundred bytes."""
    lines = ["NETWORK:", "  PARTIAL_PRETRAIN_PREFIX_CHANGES:",
             "  - &x0 [" + ", ".join(['"a->b"'] * 10) + "]"]
    lines += [f"  - &x{i} [" + ", ".join([f"*x{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path):
    """A billion strings: refused while the document is still a node graph. Run in a child process with 2 GB of
    address space, so that a reader that expanded it would fail there (MemoryError or the timeout) rather than
    take the machine."""
    path = write(tmp_path, bomb(9))
    child = textwrap.dedent(f"""\
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        from common.config import ConfigError, load_config
        try:
            load_config({str(path)!r})
        except ConfigError as err:
            print(err)
        """)
    try:
        result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.fail("the alias bomb was expanded (still running after 120 s)")
    assert result.stdout.startswith(f"{path}: line 7: the aliases (*name) expand this value to more than 100,000 "
                                    "nodes; refusing it"), result.stdout + result.stderr[-2000:]


def test_small_alias_use_passes_and_a_recursive_alias_is_refused():
    assert load_yaml_text(bomb(3)) == yaml.safe_load(bomb(3))  # 1000 strings: fine
    with pytest.raises(AliasExpansionError, match=r"^x\.yaml: line 1: an alias refers to a node that contains it"):
        load_yaml_text("a: &a [1, *a]\n", "x.yaml")


def test_command_line_values_go_through_the_same_checks(tmp_path):
    cfg = load_config(write(tmp_path, "{}\n"), add_task_defaults=add_vqa_defaults).clone()
    with pytest.raises(ConfigError, match=r"^command line value of TRAIN\.LR_STEP: key a is given twice"):
        merge_overrides(cfg, ["TRAIN.LR_STEP", "{a: 1, a: 2}"])
    merge_overrides(cfg, ["TRAIN.LR", "0.5", "MODEL_PREFIX", "not: [valid"])  # non-YAML text stays a string
    assert cfg.TRAIN.LR == 0.5 and cfg.MODEL_PREFIX == "not: [valid"


def test_no_other_module_parses_yaml():
    """Every YAML the project reads goes through common/yaml_io.py (tests may call yaml directly)."""
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith((".venv/", "tests/", "external/repos/")) or rel == "common/yaml_io.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "yaml"
                    and node.attr in ("safe_load", "load", "full_load", "unsafe_load", "safe_load_all",
                                      "load_all", "SafeLoader", "Loader", "FullLoader")):
                offenders.append(f"{rel}:{node.lineno} yaml.{node.attr}")
    assert offenders == []
