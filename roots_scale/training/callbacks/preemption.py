"""Stop early, after a whole step and with a checkpoint: on SIGTERM / SIGUSR1 (what SLURM sends before a time
limit or a preemption), when the exit-duration budget would not fit another step, or at `exit_interval`."""

from __future__ import annotations

import signal
import time

import torch
import torch.distributed as dist

from roots_scale.training.trainer import Callback, FitResult, Trainer

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preemption(Callback):
    def __init__(self, exit_duration_minutes: float | None = None, exit_interval: int | None = None,
                 started_at: float | None = None) -> None:
        self.exit_duration_minutes = exit_duration_minutes
        self.exit_interval = exit_interval
        self.started_at = time.perf_counter() if started_at is None else started_at  # the budget counts from here
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def on_fit_start(self, trainer: Trainer) -> None:
        for number in PREEMPTION_SIGNALS:  # record instead of dying, so the step can finish and be saved
            self._previous[number] = signal.signal(number, self._record)

    def on_fit_end(self, trainer: Trainer, result: FitResult | None) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _record(self, number: int, frame) -> None:
        self.received = number

    def stop_reason(self, trainer: Trainer, step: int) -> str | None:
        """One all-reduce decides for every rank: a signal may reach only some processes, and rank 0 alone
        judges the time budget (one more average step must fit), so all ranks stop after the same step."""
        out_of_time = False
        if self.exit_duration_minutes is not None and dist.get_rank() == 0:
            elapsed = time.perf_counter() - self.started_at
            next_step = trainer.timer.run_seconds / trainer.timer.run_steps
            out_of_time = elapsed + next_step > 60.0 * self.exit_duration_minutes
        flags = torch.tensor([int(self.received is not None), int(out_of_time)], device=trainer.engine.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        signalled, out_of_time = (bool(v) for v in flags.tolist())
        if signalled:
            return "preempted"
        if out_of_time:
            return "exit_duration"
        if self.exit_interval is not None and step % self.exit_interval == 0:
            return "exit_interval"
        return None
