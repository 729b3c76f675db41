"""DDP's `find_unused_parameters` decided from the model: one dry forward + backward on the first training samples
lists the trainable parameters that get no gradient in this configuration (TRAIN.FIND_UNUSED_PARAMETERS "auto").

The dry step leaves no trace: random generators, buffers (BatchNorm statistics) and gradients are restored, and the
samples are read from the dataset directly (the loader's sampler and workers are not touched).
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import IterableDataset

from common.engine import dist
from common.engine.checkpoint import rng_state, set_rng_state
from common.engine.dist import DistEnv

log = logging.getLogger(__name__)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [_to_device(v, device) for v in batch]
    return batch


def first_samples_batch(loader: Any) -> dict | None:
    """A batch of the first samples of the loader's dataset, collated as the loader does (a multi-task loader:
    each loader's batch merged under its prefix); None when the loader exposes no dataset and collate function."""
    if hasattr(loader, "loaders") and hasattr(loader, "prefixes"):  # common/data/multitask_loader.py
        parts = [first_samples_batch(sub) for sub in loader.loaders]
        if any(part is None for part in parts):
            return None
        merged = dict(parts[0])
        for prefix, part in zip(loader.prefixes, parts[1:], strict=True):
            merged.update({prefix + key: value for key, value in part.items()})
        return merged
    dataset, collate = getattr(loader, "dataset", None), getattr(loader, "collate_fn", None)
    # a streaming loader (common/data/streaming.py) has no samples to read by index: no dry step
    if dataset is None or collate is None or isinstance(dataset, IterableDataset) or len(dataset) == 0:
        return None
    size = getattr(loader, "batch_size", None) or getattr(getattr(loader, "batch_sampler", None), "batch_size", 2)
    return collate([dataset[i] for i in range(min(int(size), len(dataset)))])


def parameters_without_gradient(module: nn.Module, batch: dict) -> list[str]:
    """Names of the trainable parameters that one training-mode forward + backward of `batch` leaves without a
    gradient. Buffers, gradients and the module's mode are as before afterwards (generators: see `dry_step`)."""
    buffers = [(b, b.detach().clone()) for b in module.buffers()]
    grads = [(p, p.grad) for p in module.parameters()]
    was_training = module.training
    try:
        for param, _ in grads:
            param.grad = None
        module.train()
        loss = module(batch)["loss"]
        loss.float().sum().backward()
        return [name for name, p in module.named_parameters() if p.requires_grad and p.grad is None]
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for param, grad in grads:
            param.grad = grad
        module.train(was_training)


def dry_step(module: nn.Module, loader: Any, device: torch.device) -> list[str] | None:
    """`parameters_without_gradient` on the loader's first samples (None without a dataset to read); the samples'
    augmentation and the step's dropout draw from generators that are put back afterwards."""
    generators = rng_state()
    try:
        batch = first_samples_batch(loader) if loader is not None else None
        return None if batch is None else parameters_without_gradient(module, _to_device(batch, device))
    finally:
        set_rng_state(generators)


def find_unused_parameters(module: nn.Module, setting: str | bool, loader: Any, env: DistEnv) -> bool:
    """TRAIN.FIND_UNUSED_PARAMETERS: true / false as given; "auto": true exactly when the dry step on any rank
    leaves a trainable parameter without a gradient (logged by name)."""
    if isinstance(setting, bool):
        log.info("DDP find_unused_parameters=%s (TRAIN.FIND_UNUSED_PARAMETERS)", setting)
        return setting
    if setting != "auto":
        raise ValueError(f'TRAIN.FIND_UNUSED_PARAMETERS: expected "auto", true or false, found {setting!r}')
    unused = dry_step(module, loader, env.device)
    if unused is None:
        log.warning("TRAIN.FIND_UNUSED_PARAMETERS auto: the training loader exposes no dataset to take a dry step "
                    "on; DDP find_unused_parameters=True")
        return True
    unused = sorted({name for names in dist.all_gather_object(unused) for name in names})
    if unused:
        log.info("DDP find_unused_parameters=True: %d trainable parameter(s) get no gradient in this "
                 "configuration: %s", len(unused), ", ".join(unused[:8]) + (", ..." if len(unused) > 8 else ""))
    else:
        log.info("DDP find_unused_parameters=False: every trainable parameter gets a gradient (dry step on the "
                 "first training samples; TRAIN.FIND_UNUSED_PARAMETERS true overrides)")
    return bool(unused)
