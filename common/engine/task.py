"""What a downstream task hands to the shared engine: a value, not a class hierarchy.

A task folder fills in one `Task` (see `vqa/task.py`); the engine calls its named fields and needs nothing else.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor, nn
from torch.utils.data import Dataset

from common.config_node import ConfigNode
from common.data.loader import SPLIT_SECTIONS
from common.data.preflight import Problems
from common.engine.dist import DistEnv
from common.metrics import Metric


class BatchLoader(Protocol):
    """What the engine iterates: a DataLoader, or anything with a length that yields batch dicts."""

    def __iter__(self) -> Iterator[dict]: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class Predictions:
    """One split's per-sample outputs, gathered on rank 0, with what produced them: the input of a task's writer."""

    outputs: list[dict]  # one dict per dataset item, in dataset order: CPU tensors plus "index"
    dataset: Dataset
    cfg: ConfigNode  # the config the split ran with
    split: str  # "val" or "test"

    @property
    def image_set(self) -> str:
        """DATASET.<SPLIT>_IMAGE_SET of the run (the split name that result files carry)."""
        return str(self.cfg.DATASET[f"{SPLIT_SECTIONS[self.split]}_IMAGE_SET"])


# (cfg, split, env) -> the loader of `split` for this rank
LoaderBuilder = Callable[[ConfigNode, str, DistEnv], BatchLoader]
# checkpoint state dict -> the module's keys
KeyMap = Callable[[Mapping[str, Tensor]], dict[str, Tensor]]
# (module, cfg, the PARTIAL_PRETRAIN state dict after the prefix changes) -> None
AfterLoad = Callable[[nn.Module, ConfigNode, Mapping[str, Tensor]], None]
# (cfg, problems to append to, samples per split (None: every file), config sections read) -> None
DataCheck = Callable[[ConfigNode, Problems, int | None, tuple[str, ...]], None]
# (predictions, result folder, result name) -> path written
PredictionWriter = Callable[[Predictions, str, str], str]
# (cfg, checkpoint path, env) -> the result file written (rank 0), None elsewhere
TestStep = Callable[[ConfigNode, str, DistEnv], "str | None"]


@dataclass(frozen=True)
class Task:
    """A task plug-in.

    Required:
        name: short name used in logs and output paths ("vqa", "vcr", ...).
        add_defaults: adds this task's config keys to the default tree (called before the YAML merge).
        build_dataset: (cfg, split) -> Dataset whose items are dicts; split is "train", "val" or "test".
            The dataset class declares `PAD_RULES` (key -> pad value, None = stack) for the shared collate.
        modules: value of cfg.MODULE -> nn.Module class with a `from_config(cfg, load_pretrained=True)`
            classmethod (False: skip the start-up weights a trained checkpoint replaces). The module's forward
            takes the collated batch dict and returns a dict with "loss" (scalar) when the batch carries labels,
            plus whatever the metrics read.
        build_metrics: cfg -> list of `common.metrics.Metric`; the first one is the host (best-model) metric.

    Optional (the engine calls each one when it is set):
        build_loader: replaces the engine's loader of a split (pretraining's multi-dataset loader).
        checkpoint_key_map: turns checkpoint keys into the module's (VCR's original TimeDistributed keys); the
            engine applies it once, after PARTIAL_PRETRAIN_PREFIX_CHANGES and before loading, and to every
            checkpoint a test script loads.
        after_load_pretrain: task initialisation after NETWORK.PARTIAL_PRETRAIN is loaded, given the checkpoint's
            state dict after PARTIAL_PRETRAIN_PREFIX_CHANGES (e.g. VQA's CLASSIFIER_PRETRAINED).
        check_data: the task's pre-flight data check (`common/data/preflight.py` runs it with the network check).
        write_predictions: the leaderboard / result file writer of `common.engine.evaluate.test_main`.
        test_after_training: `train_end2end.py --do-test`, run on every rank with the kept checkpoint.
    """

    name: str
    add_defaults: Callable[[ConfigNode], None]
    build_dataset: Callable[[ConfigNode, str], Dataset]
    modules: Mapping[str, type[nn.Module]]
    build_metrics: Callable[[ConfigNode], list[Metric]]
    build_loader: LoaderBuilder | None = None
    checkpoint_key_map: KeyMap | None = None
    after_load_pretrain: AfterLoad | None = None
    check_data: DataCheck | None = None
    write_predictions: PredictionWriter | None = None
    test_after_training: TestStep | None = None

    def build_module(self, cfg: ConfigNode, load_pretrained: bool = True) -> nn.Module:
        """Instantiate the module class named by cfg.MODULE. `load_pretrained=False` skips the start-up weights
        (BERT, ImageNet ResNet) when a trained checkpoint will replace every weight anyway."""
        if cfg.MODULE not in self.modules:
            raise ValueError(f"{self.name}: MODULE {cfg.MODULE!r} is not one of {sorted(self.modules)}")
        return self.modules[cfg.MODULE].from_config(cfg, load_pretrained=load_pretrained)
