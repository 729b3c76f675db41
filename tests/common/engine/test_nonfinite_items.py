"""The non-finite guard names the items whose inputs hold NaN or inf, through their dataset's `describe(index)`
(the index when a dataset has none), routes `aux_*` keys to the auxiliary dataset, and says when no input is
non-finite (the model itself diverged)."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from common.data.multitask_loader import MultiTaskDataLoader
from common.engine.nonfinite import describe_item, nonfinite_inputs, nonfinite_rows
from common.engine.trainer import NonFiniteLossError
from tests.common.engine.test_engine import run_fit


class Named(Dataset):
    def __init__(self, name: str, size: int = 8):
        self.name, self.size = name, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        return {"index": index}

    def describe(self, index: int) -> str:
        return f"{self.name} item {index}"


class Unnamed(Named):
    describe = None


def batch(indices: list[int], prefix: str = "", bad: dict | None = None) -> dict:
    """Finite inputs for the given dataset indices; `bad` = {key: (row, value)} puts a NaN/inf in one row."""
    rows = len(indices)
    out = {"index": torch.tensor(indices), "box_features": torch.ones(rows, 3, 5), "boxes": torch.zeros(rows, 3, 4),
           "text": torch.ones(rows, 4, dtype=torch.long), "im_info": torch.ones(rows, 4), "ids": list(indices)}
    for key, (row, value) in (bad or {}).items():
        out[key][row].view(-1)[-1] = value
    return {prefix + key: value for key, value in out.items()}


def loader(dataset: Dataset) -> DataLoader:
    return DataLoader(dataset, batch_size=4)


def test_each_item_with_a_nonfinite_input_is_named_with_the_inputs_concerned():
    micro = [batch([4, 5, 6, 7], bad={"box_features": (1, float("nan")), "boxes": (1, float("inf"))}),
             batch([0, 1, 2, 3], bad={"im_info": (3, float("-inf"))})]
    assert nonfinite_rows(micro[0]) == {1: ["box_features", "boxes"]}
    assert nonfinite_inputs(loader(Named("vqa")), micro) == (
        "NaN or inf in the inputs of 2 item(s): vqa item 5 [box_features, boxes]; vqa item 3 [im_info]")


def test_a_dataset_without_describe_is_named_by_index():
    micro = [batch([4, 5, 6, 7], bad={"boxes": (2, float("nan"))})]
    assert nonfinite_inputs(loader(Unnamed("x")), micro) == "NaN or inf in the inputs of 1 item(s): dataset index 6 " \
                                                             "[boxes]"

    class Failing(Named):
        def describe(self, index):
            raise KeyError(index)

    assert describe_item(Failing("f"), 3) == "dataset index 3 (describe failed: KeyError: 3)"


def test_aux_keys_belong_to_the_auxiliary_dataset():
    multi = MultiTaskDataLoader([loader(Named("captions")), loader(Named("corpus"))])
    micro = [{**batch([0, 1]), **batch([5, 6], "aux_", {"box_features": (0, float("nan"))})}]
    assert nonfinite_inputs(multi, micro) == "NaN or inf in the inputs of 1 item(s): corpus item 5 [box_features]"


def test_finite_inputs_mean_the_model_diverged():
    text = nonfinite_inputs(loader(Named("vqa")), [batch([0, 1, 2, 3])])
    assert text.startswith("no input of these samples holds a NaN or inf, so the model itself diverged")


def test_long_lists_are_cut():
    micro = [batch(list(range(12)))]
    micro[0]["boxes"][:, 0, 0] = float("nan")
    text = nonfinite_inputs(loader(Named("d", 12)), micro)
    assert text.count(" item ") == 10 and text.endswith("and 2 more")


def test_the_training_guard_names_the_item(tmp_path, monkeypatch, caplog):
    """The stand-in run with a NaN input in sample 5 (and, separately, in 0, 4 and 8): the warning names the
    items by the dataset's own words. Before, it listed the step's dataset indices only."""
    monkeypatch.setenv("STANDIN_NAN", "5")
    with caplog.at_level("WARNING"):
        run_fit(tmp_path / "one", "TRAIN.SHUFFLE", "false", "TRAIN.END_EPOCH", "1")
    assert "samples [4, 5, 6, 7]); NaN or inf in the inputs of 1 item(s): stand-in sample 5 [x]; 1 in a row" \
        in caplog.text
    caplog.clear()
    monkeypatch.setenv("STANDIN_NAN", "0,4,8")
    with caplog.at_level("WARNING"), pytest.raises(NonFiniteLossError):
        run_fit(tmp_path / "three", "TRAIN.SHUFFLE", "false", "TRAIN.MAX_NONFINITE_STEPS", "3")
    assert "stand-in sample 8 [x]; 3 in a row" in caplog.text
