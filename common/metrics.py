"""Metrics shared by tasks: each keeps a running (sum, count) pair that the engine all-reduces.

Reduction happens only when a value is read (`compute`), and a rank that saw no sample contributes (0, 0)
instead of skipping the collective, so ranks never desynchronise (the original's EvalMetric did).
"""
from __future__ import annotations

import torch
import torch.distributed as torch_dist
from torch import Tensor


class Metric:
    """Base class: subclasses implement `batch_stats(outputs, batch) -> (sum, count)`."""

    def __init__(self, name: str):
        self.name = name
        self.reset()

    def reset(self) -> None:
        # kept on the device of the first update, so training steps add no host sync; moved to CPU in compute()
        self.total = torch.zeros(2, dtype=torch.float64)

    def batch_stats(self, outputs: dict, batch: dict) -> tuple[Tensor | float, Tensor | float]:
        raise NotImplementedError

    @torch.no_grad()
    def update(self, outputs: dict, batch: dict) -> None:
        value, count = self.batch_stats(outputs, batch)
        value = torch.as_tensor(value, dtype=torch.float64).detach()
        count = torch.as_tensor(count, dtype=torch.float64, device=value.device).detach()
        if self.total.device != value.device:
            self.total = self.total.to(value.device)
        self.total = self.total + torch.stack([value.sum(), count.sum()])

    def compute(self, reduce: bool = True) -> float:
        """Mean over all updates, summed over ranks when distributed (every rank must call it)."""
        total = self.total.detach().clone()
        if reduce and torch_dist.is_available() and torch_dist.is_initialized():
            device = torch.device("cuda", torch.cuda.current_device()) if torch_dist.get_backend() == "nccl" else "cpu"
            total = total.to(device)
            torch_dist.all_reduce(total)
            total = total.cpu()
        return float(total[0] / total[1]) if total[1] > 0 else 0.0


class LossLogger(Metric):
    """Mean of a scalar output (e.g. "ans_loss") over batches."""

    def __init__(self, output_name: str, display_name: str | None = None):
        self.output_name = output_name
        super().__init__(display_name or output_name)

    def batch_stats(self, outputs: dict, batch: dict):
        if self.output_name not in outputs:
            return 0.0, 0.0
        return outputs[self.output_name].detach().float().mean(), 1.0


class Accuracy(Metric):
    """Top-1 accuracy of outputs[logits_key].argmax(-1) against batch[label_key]; labels < 0 are ignored."""

    def __init__(self, name: str = "Acc", logits_key: str = "label_logits", label_key: str = "label"):
        self.logits_key, self.label_key = logits_key, label_key
        super().__init__(name)

    def batch_stats(self, outputs: dict, batch: dict):
        labels = batch[self.label_key].view(-1)
        predictions = outputs[self.logits_key].argmax(-1).view(-1)
        valid = labels >= 0
        return ((predictions == labels) & valid).sum(), valid.sum()
