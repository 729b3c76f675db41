"""Shared inference for test/val scripts: load a trained module and collect per-sample outputs in dataset order."""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from common.engine import dist
from common.engine.checkpoint import strip_module_prefix
from common.engine.trainer import move_to_device
from common.model.state_dict_io import load_state_dict_with_report, read_checkpoint_file

log = logging.getLogger(__name__)


def load_module_for_inference(task: Any, cfg: Any, ckpt_path: str, device: torch.device | str = "cpu") -> nn.Module:
    """Build cfg.MODULE and load a checkpoint of ours or the original's (`state_dict` key, with or without
    `module.`); every model weight must be present."""
    module = task.build_module(cfg)
    ckpt = read_checkpoint_file(ckpt_path)
    state_dict = strip_module_prefix(ckpt.get("state_dict", ckpt))
    load_state_dict_with_report(module, state_dict, source=ckpt_path, allow_missing=False)
    return module.to(device).eval()


def split_outputs(outputs: dict, batch_size: int) -> list[dict]:
    """Per-sample dicts from batched outputs (tensors whose first dim is the batch size; others are dropped)."""
    samples: list[dict] = [{} for _ in range(batch_size)]
    for key, value in outputs.items():
        if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == batch_size:
            for i, row in enumerate(value.detach().float().cpu()):
                samples[i][key] = row
    return samples


@torch.no_grad()
def run_inference(module: nn.Module, loader: Any, device: torch.device | str = "cpu",
                  autocast_dtype: torch.dtype | None = None, show_progress: bool = True) -> list[dict]:
    """Outputs of every sample of `loader`'s dataset, ordered by dataset index, each once (gathered to all ranks).

    Each sample dict holds the module's per-sample outputs plus "index".
    """
    device = torch.device(device)
    module.eval()
    collected: list[dict] = []
    for batch in tqdm(loader, desc="inference", disable=not (show_progress and dist.rank() == 0)):
        batch = move_to_device(batch, device)
        if autocast_dtype is not None:
            with torch.autocast(device.type, dtype=autocast_dtype):
                outputs = module(batch)
        else:
            outputs = module(batch)
        indices = torch.as_tensor(batch["index"]).view(-1).tolist()
        for index, sample in zip(indices, split_outputs(outputs, len(indices)), strict=True):
            sample["index"] = int(index)
            collected.append(sample)
    merged = [s for part in dist.all_gather_object(collected) for s in part]
    unique = {s["index"]: s for s in merged}
    return [unique[i] for i in sorted(unique)]
