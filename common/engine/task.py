"""What a downstream task hands to the shared engine: a value, not a class hierarchy.

A task folder fills in one `Task` (see `vqa/task.py`); the engine needs nothing else from it.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.utils.data import Dataset


@dataclass(frozen=True)
class Task:
    """A task plug-in.

    Fields:
        name: short name used in logs and output paths ("vqa", "vcr", ...).
        add_defaults: adds this task's config keys to the default tree (called before the YAML merge).
        build_dataset: (cfg, split) -> Dataset whose items are dicts; split is "train", "val" or "test".
            The dataset class declares `PAD_RULES` (key -> pad value, None = stack) for the shared collate.
        modules: value of cfg.MODULE -> nn.Module class with a `from_config(cfg)` classmethod. The module's
            forward takes the collated batch dict and returns a dict with "loss" (scalar) when the batch
            carries labels, plus whatever the metrics read.
        build_metrics: cfg -> list of `common.metrics.Metric`; the first one is the host (best-model) metric.
        write_predictions: optional leaderboard writer, (outputs, dataset, path) -> path written.
        after_load_pretrain: optional task initialisation after NETWORK.PARTIAL_PRETRAIN has been loaded,
            (module, cfg, checkpoint_state_dict) -> None (e.g. VQA's CLASSIFIER_PRETRAINED).
    """

    name: str
    add_defaults: Callable[[Any], None]
    build_dataset: Callable[[Any, str], Dataset]
    modules: Mapping[str, type[nn.Module]]
    build_metrics: Callable[[Any], list]
    write_predictions: Callable[..., str] | None = None
    after_load_pretrain: Callable[..., None] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def build_module(self, cfg: Any) -> nn.Module:
        """Instantiate the module class named by cfg.MODULE."""
        if cfg.MODULE not in self.modules:
            raise ValueError(f"{self.name}: MODULE {cfg.MODULE!r} is not one of {sorted(self.modules)}")
        return self.modules[cfg.MODULE].from_config(cfg)
