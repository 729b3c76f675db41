"""Safe checkpoint reading and the one readable missing/unexpected-key report used by every loader."""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A weights file that cannot be read, or whose keys or shapes do not fit the model."""


def read_checkpoint_file(path: str, hint: str = "") -> dict:
    """Read a .safetensors file or a torch pickle with weights_only=True, or a DCP checkpoint folder as the dict of
    its `.model` conversion (common/model/dcp_files.py); errors name the file.

    `hint` is appended to the message when the file is missing (e.g. where to download it and where to put it).
    """
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, ".metadata")):  # a TRAIN.CHECKPOINT_FORMAT dcp folder
        from common.model.dcp_files import to_model_file

        return to_model_file(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path}" + (f". {hint}" if hint else ""))
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return dict(load_file(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    return dict(obj)


def summarize_keys(keys: Iterable[str], limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_with_report(
    module: nn.Module,
    state_dict: Mapping[str, Tensor],
    source: str,
    allow_missing: bool = True,
    allow_unexpected: bool = True,
) -> tuple[list[str], list[str]]:
    """Copy matching tensors into `module`, checking shapes first; log one message listing missing/unexpected keys.

    Raises CheckpointError naming `source` and the first key whose shape differs, or (when not allowed) the
    missing/unexpected keys. Returns (missing, unexpected).
    """
    own = module.state_dict()
    for key, value in state_dict.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{source}: shape mismatch at key {key}: checkpoint {tuple(value.shape)}, model {tuple(own[key].shape)}"
            )
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if (missing and not allow_missing) or (unexpected and not allow_unexpected):
        raise CheckpointError(
            f"{source}: keys do not fit the model; missing: [{summarize_keys(missing)}]; "
            f"unexpected: [{summarize_keys(unexpected)}]"
        )
    module.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)
    if missing or unexpected:
        log.warning(
            "%s: loaded %d tensors; missing %d [%s]; unexpected %d [%s]",
            source, len(state_dict) - len(unexpected), len(missing), summarize_keys(missing),
            len(unexpected), summarize_keys(unexpected),
        )
    else:
        log.info("%s: loaded all %d tensors", source, len(state_dict))
    return missing, unexpected
