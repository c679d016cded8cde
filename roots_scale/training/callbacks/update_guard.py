"""Skip an optimizer update whose loss is non-finite or (optionally) a spike, and stop a run whose loss stays
non-finite. The gradients are hidden from the optimizer, so a skipped step moves no weight and no Adam
moment, on every rank alike (the verdict is on the data-parallel mean loss)."""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from roots_scale.checkpoint.deepspeed_state import base_optimizer
from roots_scale.training.trainer import Callback, Trainer, TrainingError


@dataclass(frozen=True)
class GuardSettings:
    max_nonfinite_steps: int
    spike_zscore: float | None = None  # None: non-finite losses only
    spike_window: int = 100


class UpdateGuard(Callback):
    def __init__(self, settings: GuardSettings, latest_checkpoint: Callable[[], str | None]) -> None:
        self.settings = settings
        self.latest_checkpoint = latest_checkpoint  # named when the run is stopped
        self.history: deque[float] = deque()
        self.consecutive_nonfinite = 0
        self.armed: str | None = None  # why the current optimizer.step() must not update

    def on_fit_start(self, trainer: Trainer) -> None:
        self.attach(base_optimizer(trainer.engine))

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Veto `optimizer`'s updates while armed (a step pre-hook on the torch optimizer under DeepSpeed)."""
        optimizer.register_step_pre_hook(self._hide_gradients)

    def _hide_gradients(self, optimizer, args, kwargs) -> None:
        if self.armed is not None:
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.grad = None  # torch's AdamW leaves a parameter without a gradient untouched

    def judge(self, loss: float) -> str | None:
        """`nonfinite`, `loss_spike` or None for a step whose data-parallel mean loss is `loss`; arms the veto."""
        if not math.isfinite(loss):
            self.consecutive_nonfinite += 1
            self.armed = "nonfinite"
            return self.armed
        self.consecutive_nonfinite = 0
        self.armed = None
        window = self.settings.spike_window
        if self.settings.spike_zscore is not None and len(self.history) >= min(window, 10):
            mean, std = statistics.fmean(self.history), statistics.pstdev(self.history)
            if std > 0 and (loss - mean) / std > self.settings.spike_zscore:
                self.armed = "loss_spike"
                return self.armed
        self.history.append(loss)
        while len(self.history) > window:
            self.history.popleft()
        return None

    def before_update(self, trainer: Trainer, step: int, loss: float) -> None:
        verdict = self.judge(loss)
        if verdict is None:
            return
        trainer.state.skipped_steps += 1
        if dist.get_rank() == 0:
            print(f"roots-train: step {step}: loss {loss:.4g}, update skipped ({verdict})", flush=True)
        if self.consecutive_nonfinite >= self.settings.max_nonfinite_steps:
            raise TrainingError(
                f"the loss was non-finite for {self.consecutive_nonfinite} consecutive steps (up to step {step}; "
                f"train.max_nonfinite_steps={self.settings.max_nonfinite_steps}); stopped without saving, the last "
                f"checkpoint ({self.latest_checkpoint() or 'none yet'}) is intact. Lower optimizer.lr, raise "
                f"optimizer.warmup_iters, or check the data around consumed sample {trainer.state.consumed_samples}")

    def on_step_end(self, trainer: Trainer, step: int, loss: float, record: dict) -> None:
        self.armed = None
