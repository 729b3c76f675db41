"""The DCP checkpoint folder on disk: reading its metadata safely, loading it whole without a process group, and
turning it into the single-file `.model` layout (`state_dict`, index-keyed `optimizer`, `scheduler`, ...).

A folder `{prefix}-{epoch:04d}.dcp` holds `.metadata` and `__{rank}_0.distcp` (torch.distributed.checkpoint: the
model's tensors under `model.<key>`, optimizer state tensors under `optimizer.<parameter name>.<state key>`) and
`trainer.pt` (rank 0; everything else, read with weights_only=True). Only tensors go through DCP, whose non-tensor
values would be unpickled unrestricted; `.metadata` is read with an unpickler that accepts DCP's own classes only.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta, TensorStorageMetadata

DCP_SUFFIX = ".dcp"
METADATA_FILE = ".metadata"
TRAINER_FILE = "trainer.pt"
FORMAT_VERSION = 1


class _MetadataUnpickler(pickle.Unpickler):
    """DCP's metadata classes, torch sizes/dtypes/layouts and paths; nothing that can run other code."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = (module.startswith("torch.distributed.checkpoint.")
                   or (module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)))
                   or (module, name) in {("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"),
                                         ("pathlib", "WindowsPath"), ("collections", "OrderedDict")})
        if not allowed:
            raise pickle.UnpicklingError(f"DCP metadata refers to {module}.{name}, which a checkpoint never needs")
        return super().find_class(module, name)


class SafeFileSystemReader(FileSystemReader):
    """FileSystemReader whose `.metadata` is unpickled with `_MetadataUnpickler`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        with open(os.path.join(self.path, METADATA_FILE), "rb") as handle:
            metadata = _MetadataUnpickler(handle).load()
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def is_dcp_folder(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, METADATA_FILE))


def read_tensor_metadata(path: str) -> dict[str, TensorStorageMetadata]:
    """Flat key -> tensor metadata of a DCP folder; errors name the folder."""
    try:
        metadata = SafeFileSystemReader(path).read_metadata()
    except Exception as err:  # noqa: BLE001 - re-raised with the folder name
        raise ValueError(f"{path}: not a readable DCP checkpoint ({type(err).__name__}: {err})") from err
    entries = metadata.state_dict_metadata
    other = [k for k, v in entries.items() if not isinstance(v, TensorStorageMetadata)]
    if other:
        raise ValueError(f"{path}: DCP entries that are not tensors ({other[:3]}); this project writes tensors only")
    return dict(entries)


def read_trainer_file(path: str) -> dict:
    """`trainer.pt` of a DCP folder (weights_only=True); errors name the file."""
    file = os.path.join(path, TRAINER_FILE)
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"{file}: not readable ({type(err).__name__}: {err})") from err
    if not isinstance(obj, dict) or obj.get("format", {}).get("version") != FORMAT_VERSION:
        raise ValueError(f"{file}: not a trainer file of format version {FORMAT_VERSION}")
    return obj


def nest(flat: dict[str, Any]) -> dict[str, dict]:
    """`model.<key>` and `optimizer.<name>.<state key>` flat keys -> {"model": {...}, "optimizer": {name: {...}}}."""
    nested: dict[str, dict] = {"model": {}, "optimizer": {}}
    for key, value in flat.items():
        part, _, rest = key.partition(".")
        if part == "model":
            nested["model"][rest] = value
        elif part == "optimizer":
            name, _, state_key = rest.rpartition(".")
            nested["optimizer"].setdefault(name, {})[state_key] = value
        else:
            raise ValueError(f"unexpected DCP key {key!r} (expected model.* or optimizer.*)")
    return nested


def load_whole(path: str) -> dict[str, dict]:
    """Every tensor of a DCP folder, full size, in this process alone: {"model": ..., "optimizer": ...}."""
    import torch.distributed.checkpoint as dcp

    entries = read_tensor_metadata(path)
    template = nest({k: torch.empty(tuple(m.size), dtype=m.properties.dtype) for k, m in entries.items()})
    with single_process_quiet():
        dcp.load(template, storage_reader=SafeFileSystemReader(path), no_dist=True)
    return template


@contextlib.contextmanager
def single_process_quiet() -> Iterator[None]:
    """Silence DCP's "assuming the intent is to save/load in a single process" (one process is what we mean)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*in a single process", category=UserWarning)
        yield


def to_model_file(path: str) -> dict:
    """A DCP folder as the dict of a `.model` file: `state_dict` (original keys), `optimizer` (index-keyed in
    the order of the saved parameter groups, as `optimizer.state_dict()`), `scheduler`, `scaler`, `train_state`,
    `rng`, `validation_monitor`, `config`."""
    trainer = read_trainer_file(path)
    tensors = load_whole(path)
    groups, state, position = [], {}, 0
    for group in trainer["optimizer_param_groups"]:
        names = group["params"]
        for offset, name in enumerate(names):
            entry = {**tensors["optimizer"].get(name, {}), **trainer["optimizer_other_state"].get(name, {})}
            if entry:
                state[position + offset] = entry
        groups.append({**{k: v for k, v in group.items() if k != "params"},
                       "params": list(range(position, position + len(names)))})
        position += len(names)
    model_file = {"state_dict": tensors["model"], "optimizer": {"state": state, "param_groups": groups}}
    model_file.update({k: trainer[k] for k in ("scheduler", "scaler", "train_state", "rng", "validation_monitor",
                                               "config")})
    return model_file


