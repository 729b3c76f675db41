"""The training loop shared by every task: epochs of accumulated steps, validation, checkpoints.

Read `fit` top to bottom: `build_run` (common/engine/run.py) makes every collaborator (optimizer, schedule, mixed
precision, checkpointer, logger) and sets the starting weights, `train_epoch` runs the accumulated steps (and, after
each, `after_step`: validation every TRAIN.VAL_EVERY_STEPS, a step checkpoint every TRAIN.CHECKPOINT_EVERY_STEPS),
`validate_epoch` the host metric; none of them decides anything about the order of events. A run resumed from a step
checkpoint starts its first epoch at the saved batch (`run.state.batches_done`).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from common.config_node import ConfigNode
from common.data.loader import epoch_batches, set_epoch
from common.engine import dist
from common.engine.amp import MixedPrecision
from common.engine.checkpoint import unwrap
from common.engine.dist import DistEnv
from common.engine.nonfinite import loader_datasets, nonfinite_inputs
from common.engine.run import Run, build_run
from common.engine.state import TrainState
from common.engine.task import BatchLoader, Task
from common.metrics import Metric

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


def move_to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [move_to_device(v, device) for v in batch]
    return batch


def train_step(module: nn.Module, micro_batches: list[dict], optimizer: torch.optim.Optimizer, amp: MixedPrecision,
               clip_norm: float, metrics: list[Metric], device: torch.device) -> dict[str, Tensor]:
    """Forward/backward over the micro-batches (all-reduce only on the last), then clip; the caller steps."""
    optimizer.zero_grad(set_to_none=True)
    total_loss = torch.zeros((), device=device)
    for i, batch in enumerate(micro_batches):
        is_last = i == len(micro_batches) - 1
        sync = contextlib.nullcontext() if is_last or not hasattr(module, "no_sync") else module.no_sync()
        with sync:
            with amp.autocast():
                outputs = module(batch)
            loss = outputs["loss"].float() / len(micro_batches)
            amp.backward(loss)
        total_loss += loss.detach()
        for metric in metrics:
            metric.update(outputs, batch)
    grad_norm = amp.unscale_and_clip(optimizer, [p for p in module.parameters() if p.requires_grad], clip_norm)
    return {"loss": total_loss, "grad_norm": grad_norm}


def is_step_finite(stats: dict[str, Tensor], amp: MixedPrecision) -> bool:
    """True unless the loss (or, without a loss scaler, the gradient norm) is inf/NaN on any rank: one host sync."""
    bad = ~torch.isfinite(stats["loss"])
    if amp.scaler is None:
        bad = bad | ~torch.isfinite(stats["grad_norm"])
    return not bool(dist.all_reduce_max(bad.float()).item())


@torch.no_grad()
def evaluate(module: nn.Module, loader: BatchLoader, metrics: list[Metric], amp: MixedPrecision, device: torch.device,
             show_progress: bool = False) -> dict[str, float]:
    """Metrics over this rank's shard (no duplicates), summed over ranks when read."""
    plain = unwrap(module)
    plain.eval()
    for metric in metrics:
        metric.reset()
    for batch in tqdm(loader, desc="val", leave=False, disable=not show_progress):
        batch = move_to_device(batch, device)
        with amp.autocast():
            outputs = plain(batch)
        for metric in metrics:
            metric.update(outputs, batch)
    values = {metric.name: metric.compute() for metric in metrics}
    plain.train()
    return values


def skip_nonfinite_step(run: Run, micro: list[dict], epoch: int) -> None:
    """Drop this update (gradients cleared, loss scale lowered); stop after TRAIN.MAX_NONFINITE_STEPS in a row."""
    state, max_skips = run.state, int(run.cfg.TRAIN.MAX_NONFINITE_STEPS)
    state.nonfinite_skips += 1
    ids = [int(i) for b in micro for i in torch.as_tensor(b.get("index", [])).view(-1).tolist()]
    log.warning("epoch %d step %d: non-finite loss or gradient; update skipped (samples %s); %s; %d in a row",
                epoch, state.global_step, ids, nonfinite_inputs(run.train_loader, micro), state.nonfinite_skips)
    run.optimizer.zero_grad(set_to_none=True)
    if run.amp.scaler is not None:
        run.amp.scaler.update()
    if state.nonfinite_skips >= max_skips:
        raise NonFiniteLossError(
            f"stopping: {state.nonfinite_skips} consecutive steps with a non-finite loss or gradient "
            f"(TRAIN.MAX_NONFINITE_STEPS={max_skips}); {run.checkpointer.describe_newest()}")


def log_train_step(run: Run, epoch: int, batch_index: int, stats: dict[str, Tensor]) -> None:
    """The LOG_FREQUENT line: loss and gradient norm averaged over ranks, the running train metrics, the LRs."""
    values = {"Loss": float(dist.all_reduce_mean(stats["loss"].float()).item())}
    values.update({m.name: m.compute() for m in run.train_metrics})
    values["grad_norm"] = float(dist.all_reduce_mean(stats["grad_norm"].float()).item())
    run.amp.report_skipped()
    run.logger.log_train(epoch, batch_index, run.state.global_step, values, run.schedule.current_lrs())


def optimizer_step(run: Run, micro: list[dict], epoch: int) -> dict[str, Tensor]:
    """One update from the accumulated micro-batches (skipped when non-finite); the schedule advances either way."""
    stats = train_step(run.model, micro, run.optimizer, run.amp, float(run.cfg.TRAIN.CLIP_GRAD_NORM),
                       run.train_metrics, run.env.device)
    if is_step_finite(stats, run.amp):
        run.amp.step(run.optimizer, stats["grad_norm"])
        run.state.nonfinite_skips = 0
    else:
        skip_nonfinite_step(run, micro, epoch)
    run.schedule.step()  # skipped updates count too, so the schedule stays a function of the epoch position
    run.state.global_step += 1
    run.logger.step_done()
    return stats


def log_bad_samples(run: Run, epoch: int) -> None:
    """For each streaming dataset of the training loader (one with `bad_sample_counts()` -> (read, bad), e.g.
    DATASET.FORMAT wds): the samples read and those skipped as bad since the loader was built, summed over ranks.
    Every rank must call it (a collective per such dataset); rank 0 logs."""
    for prefix, dataset in loader_datasets(run.train_loader):
        counts = getattr(dataset, "bad_sample_counts", None)
        if not callable(counts):
            continue
        local = torch.tensor([float(v) for v in counts()], dtype=torch.float64, device=run.env.device)
        read, bad = (round(v) for v in (dist.all_reduce_mean(local) * dist.world_size()).tolist())
        if run.env.is_main:
            name = getattr(dataset, "name", None) or f"training data {prefix or '(main)'}"
            log.info("Epoch[%d] %s: %d of %d samples read so far were bad and skipped", epoch, name, bad, read)


def train_epoch(run: Run, epoch: int) -> None:
    """Every batch of the epoch from `run.state.batches_done` on (0 unless resumed part-way into it),
    GRAD_ACCUMULATE_STEPS micro-batches per update (the last update may take fewer)."""
    start = run.state.batches_done
    set_epoch(run.train_loader, epoch, start)
    run.model.train()
    for metric in run.train_metrics:
        metric.reset()
    micro: list[dict] = []
    last = epoch_batches(run.train_loader) - 1
    batches = run.logger.timed(run.train_loader)  # observability: time spent waiting for data
    progress = tqdm(batches, desc=f"epoch {epoch}", disable=not run.env.is_main, leave=False, initial=start,
                    total=last + 1)
    for batch_index, batch in enumerate(progress, start=start):
        micro.append(move_to_device(batch, run.env.device))
        if len(micro) < run.accumulate and batch_index != last:
            continue
        stats = optimizer_step(run, micro, epoch)
        micro = []
        run.state.batches_done = batch_index + 1
        if run.logger.due(batch_index // run.accumulate):
            log_train_step(run, epoch, batch_index, stats)
        after_step(run, epoch, epoch_end=batch_index == last)
    run.logger.log_epoch_train(epoch, {m.name: m.compute() for m in run.train_metrics},  # every rank: a collective
                               step=run.state.global_step)
    log_bad_samples(run, epoch)  # every rank: a collective


def validation_due(run: Run, epoch: int) -> bool:
    """Whether the end of `epoch` validates (every VAL_FREQUENT epochs)."""
    frequent = int(run.cfg.VAL_FREQUENT)
    return run.val_loader is not None and frequent > 0 and (epoch + 1) % frequent == 0


def validate(run: Run) -> tuple[float | None, dict[str, float]]:
    """(host metric, every metric) of the current weights on the validation set."""
    values = evaluate(run.model, run.val_loader, run.val_metrics, run.amp, run.env.device,
                      show_progress=run.env.is_main)
    return (values[run.val_metrics[0].name] if run.val_metrics else None), values


def step_validation_due(run: Run, epoch: int, epoch_end: bool) -> bool:
    every = int(run.cfg.TRAIN.VAL_EVERY_STEPS)
    due = run.val_loader is not None and every > 0 and run.state.global_step % every == 0
    return due and not (epoch_end and validation_due(run, epoch))


def after_step(run: Run, epoch: int, epoch_end: bool) -> None:
    """In-loop validation every TRAIN.VAL_EVERY_STEPS updates and a step checkpoint every CHECKPOINT_EVERY_STEPS,
    each left to the end of the epoch when it falls on the epoch's last update and the epoch end does it anyway.
    A new best in-loop score writes `-best.model` at once: the weights it measured change with the next step."""
    is_best = False
    if step_validation_due(run, epoch, epoch_end):
        score, values = validate(run)
        log_step_validation(run, epoch, values)
        is_best = run.state.record(epoch, score)
    checkpointer = run.checkpointer
    step_file = checkpointer.step_due(run.state.global_step) and not (epoch_end and checkpointer.epoch_due(epoch))
    run.checkpointer.save_step(run.parts, step_file, is_best)


def log_step_validation(run: Run, epoch: int, values: dict[str, float]) -> None:
    """The in-loop validation line and record, by global step (`Step-Val-*`; epoch ends log `Val-*` by epoch)."""
    run.logger.log_step_val(epoch, run.state.global_step, values)


def validate_epoch(run: Run, epoch: int) -> float | None:
    """The host metric after `epoch` when validation is due (every VAL_FREQUENT epochs), else None."""
    if not validation_due(run, epoch):
        return None
    score, values = validate(run)
    run.logger.log_val(epoch, values, step=run.state.global_step)
    return score


def fit(task: Task, cfg: ConfigNode, env: DistEnv, cfg_name: str, log_dir: str | None = None) -> TrainState:
    """Train `task` as `cfg` says, resuming from the newest checkpoint when allowed. Returns the final state."""
    run = build_run(task, cfg, env, cfg_name, log_dir)
    for epoch in range(run.state.epoch, int(run.cfg.TRAIN.END_EPOCH)):
        train_epoch(run, epoch)
        score = validate_epoch(run, epoch)
        is_best = run.state.record(epoch, score)
        run.schedule.after_epoch(score)
        run.state.epoch, run.state.batches_done = epoch + 1, 0
        run.checkpointer.save(epoch, is_best, run.parts)
    run.logger.close()
    return run.state
