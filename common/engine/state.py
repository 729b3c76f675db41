"""The training bookkeeping a checkpoint carries: next epoch, update count, best host metric, skipped steps."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class TrainState:
    """The only mutable training bookkeeping; restored on resume."""

    epoch: int = 0  # next epoch to run
    global_step: int = 0  # optimizer updates so far (skipped non-finite ones included)
    best_epoch: int = -1
    best_val: float = float("-inf")
    nonfinite_skips: int = 0  # consecutive updates skipped for a non-finite loss

    def record(self, epoch: int, score: float | None) -> bool:
        """Track the best host metric (higher is better, as the original's ValidationMonitor); True on a new best."""
        if score is None or score <= self.best_val:
            return False
        self.best_epoch, self.best_val = epoch, float(score)
        return True

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            if hasattr(self, key):
                setattr(self, key, value)
