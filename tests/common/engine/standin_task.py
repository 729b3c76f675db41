"""A tiny stand-in task (seeded random regression data, a small MLP with dropout) to test the engine alone."""
from __future__ import annotations

import json
import os
import random
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from common.atomic_write import open_atomic
from common.engine.task import Predictions, Task
from common.metrics import Metric


class StandInDataset(Dataset):
    PAD_RULES = {"x": None, "y": None}

    def __init__(self, size: int, nan_indices: tuple[int, ...] = ()):
        generator = torch.Generator().manual_seed(size)
        self.x = torch.randn(size, 6, generator=generator)
        self.y = (self.x @ torch.linspace(-1, 1, 6)).unsqueeze(-1)
        self.nan_indices = set(nan_indices)

    def __len__(self) -> int:
        return len(self.x)

    def describe(self, index: int) -> str:
        return f"stand-in sample {index}"

    def __getitem__(self, index: int) -> dict:
        x = self.x[index].clone()
        if index in self.nan_indices:
            x[0] = float("nan")
        if os.environ.get("STANDIN_AUGMENT"):  # an augmentation drawing from every global generator, as tasks do
            x = x + 0.1 * torch.randn(6) + float(np.random.normal(0, 0.1)) + random.gauss(0, 0.1)
        return {"x": x, "y": self.y[index], "index": index}


def _sleep_on_rank0(variable: str) -> None:
    if os.environ.get(variable) and int(os.environ.get("RANK", "0")) == 0:
        time.sleep(float(os.environ[variable]))


class StandInModule(nn.Module):
    def __init__(self, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 1))
        # a rank that must crash (launcher test): set STANDIN_CRASH_RANK
        self.crash_rank = int(os.environ.get("STANDIN_CRASH_RANK", "-1"))

    @classmethod
    def from_config(cls, cfg, load_pretrained: bool = True) -> StandInModule:
        return cls(cfg.NETWORK.VLBERT.hidden_dropout_prob)

    def state_dict(self, *args, **kwargs):
        _sleep_on_rank0("STANDIN_SAVE_SLEEP")  # a slow checkpoint write (only the checkpointer asks for it)
        return super().state_dict(*args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        _sleep_on_rank0("STANDIN_LOAD_SLEEP")  # a slow checkpoint read
        return super().load_state_dict(*args, **kwargs)

    def forward(self, batch: dict) -> dict:
        if self.training and int(os.environ.get("RANK", "0")) == self.crash_rank:
            raise RuntimeError("stand-in crash")
        if self.training and os.environ.get("STANDIN_SLEEP"):
            time.sleep(float(os.environ["STANDIN_SLEEP"]))
        prediction = self.net(batch["x"])
        loss = nn.functional.mse_loss(prediction, batch["y"])
        return {"loss": loss, "prediction": prediction, "mse": loss.detach()}


class NegativeMSE(Metric):
    def batch_stats(self, outputs, batch):
        err = ((outputs["prediction"] - batch["y"]) ** 2).sum()
        return -err, batch["y"].shape[0]


def build_dataset(cfg, split: str) -> StandInDataset:
    size = 32 if split == "train" else 11  # odd: two ranks get 6 and 5 validation samples
    nan = tuple(int(i) for i in os.environ.get("STANDIN_NAN", "").split(",") if i) if split == "train" else ()
    return StandInDataset(size, nan)


def write_predictions(predictions: Predictions, result_dir: str, result_name: str) -> str:
    """`{result_name}_standin_{image set}.json`: [index, exact float repr of the prediction] per sample."""
    path = os.path.join(result_dir, f"{result_name}_standin_{predictions.image_set}.json")
    with open_atomic(path) as f:
        json.dump([[o["index"], repr(float(o["prediction"][0]))] for o in predictions.outputs], f)
    return path


STANDIN = Task(
    name="standin",
    add_defaults=lambda cfg: None,
    build_dataset=build_dataset,
    modules={"StandIn": StandInModule},
    build_metrics=lambda cfg: [NegativeMSE("NegMSE")],
    write_predictions=write_predictions,
)
