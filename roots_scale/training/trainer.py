"""The training loop: optimizer steps of micro-batches through a DeepSpeed engine, and hooks for everything else.

Checkpointing, preemption, the update guard, throughput and MFU, validation and metrics logging are
callbacks (`training.callbacks`), each with its own small settings; the loop only fetches batches,
steps the engine and asks its callbacks, in list order, what to do around each step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from roots_core.errors import RootsError
from roots_scale.data import SampleSource
from roots_scale.data.loader import step_batches

REQUEUE_REASONS = ("preempted", "exit_duration")  # stops after which the job should be requeued to continue


class TrainingError(RootsError):
    """The run cannot go on (e.g. the loss stays non-finite); the last checkpoint is left intact."""


@dataclass(frozen=True)
class LoopSettings:
    """What the loop itself needs: how many steps, and how a step's batch is cut and fetched."""

    iters: int
    micro_batch_size: int
    accumulation_steps: int
    num_workers: int = 0
    pin_memory: bool = False


@dataclass
class TrainState:
    """What the loop needs to continue exactly where it stopped."""

    step: int = 0  # optimizer steps completed
    consumed_samples: int = 0
    skipped_steps: int = 0  # updates skipped for a non-finite loss or a loss spike (the step still counts)

    def to_dict(self) -> dict[str, int]:
        return {"step": self.step, "consumed_samples": self.consumed_samples, "skipped_steps": self.skipped_steps}


@dataclass(frozen=True)
class FitResult:
    """How `fit` ended (`finished`, `exit_interval`, `exit_duration` or `preempted`) and the last step."""

    reason: str
    step: int
    resumed_from: int | None

    @property
    def requeue(self) -> bool:
        return self.reason in REQUEUE_REASONS


@dataclass
class StepTimer:
    """Seconds spent fetching batches and stepping (not logging, validating or saving), per interval and per run."""

    interval_seconds: float = 0.0
    interval_steps: int = 0
    run_seconds: float = 0.0
    run_steps: int = 0

    def add(self, seconds: float) -> None:
        self.interval_seconds += seconds
        self.interval_steps += 1
        self.run_seconds += seconds
        self.run_steps += 1

    def take_interval(self) -> tuple[float, int]:
        """Seconds and steps since the last call: the window a logged rate averages over."""
        interval = (self.interval_seconds, self.interval_steps)
        self.interval_seconds, self.interval_steps = 0.0, 0
        return interval


class Callback:
    """A hook into the loop. Every method is optional; callbacks run in the order the trainer lists them.

    `step` is always the 1-based number of the step in question (the one about to run, or just run).
    """

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first step (e.g. restore a checkpoint into the engine and `trainer.state`)."""

    def on_step_start(self, trainer: Trainer, step: int) -> None:
        """Before the step's first micro-batch."""

    def before_update(self, trainer: Trainer, step: int, loss: float) -> None:
        """Gradients are reduced and `loss` is the data-parallel mean; the optimizer has not stepped yet."""

    def on_step_end(self, trainer: Trainer, step: int, loss: float, record: dict[str, float | int | None]) -> None:
        """The update is done; add what this callback measures to the step's `record`."""

    def on_record(self, trainer: Trainer, step: int, record: dict[str, float | int | None]) -> None:
        """The step's non-empty record, complete (every callback has added to it)."""

    def stop_reason(self, trainer: Trainer, step: int) -> str | None:
        """Why the run should save and stop after `step`, or None. Called on every rank, every step."""
        return None

    def after_step(self, trainer: Trainer, step: int, stop: str | None) -> None:
        """Last thing of a step, knowing whether the run stops after it (e.g. save a checkpoint)."""

    def on_fit_end(self, trainer: Trainer, result: FitResult | None) -> None:
        """After the loop, also when it raised (then `result` is None)."""


class EngineSteps:
    """How a step's micro-batches go through the engine (the pipeline engine runs its own schedule)."""

    def train(self, trainer: Trainer, micro_batches: list[dict[str, torch.Tensor]],
              before_update: Callable[[float], None]) -> float:
        """Forward, backward and the optimizer step; `before_update(data-parallel mean loss)` runs before the
        update, on every rank. Returns that loss."""
        raise NotImplementedError

    def evaluate(self, trainer: Trainer, batches: Sequence[dict[str, torch.Tensor]]) -> float:
        """The data-parallel mean loss of `batches` (called in eval mode, without gradients)."""
        raise NotImplementedError


class MicroBatchSteps(EngineSteps):
    """DeepSpeed's engine: forward and backward each micro-batch, the engine steps at the last one."""

    def train(self, trainer: Trainer, micro_batches: list[dict[str, torch.Tensor]],
              before_update: Callable[[float], None]) -> float:
        engine = trainer.engine
        total = torch.zeros((), device=engine.device)
        mean_loss = math.nan
        for index, batch in enumerate(micro_batches):
            loss = engine(**trainer.to_device(batch))
            engine.backward(loss)
            total += loss.detach().float()
            if index == len(micro_batches) - 1:
                mean_loss = trainer.mean_over_data_parallel(total / len(micro_batches))
                before_update(mean_loss)
            engine.step()
        return mean_loss

    def evaluate(self, trainer: Trainer, batches: Sequence[dict[str, torch.Tensor]]) -> float:
        losses = [trainer.engine(**trainer.to_device(batch)).float() for batch in batches]
        return trainer.mean_over_data_parallel(torch.stack(losses).mean())


class Trainer:
    """Runs optimizer steps until `settings.iters` or until a callback stops the run."""

    def __init__(self, engine, dataset: SampleSource, settings: LoopSettings, learning_rate: Callable[[int], float],
                 data_parallel_group, callbacks: Sequence[Callback] = (), steps: EngineSteps | None = None) -> None:
        self.engine = engine
        self.steps = steps or MicroBatchSteps()
        self.dataset = dataset
        self.settings = settings
        self.learning_rate = learning_rate  # of the 0-based step about to run
        self.dp_group = data_parallel_group
        self.callbacks = list(callbacks)
        self.state = TrainState()
        self.timer = StepTimer()
        self.resumed_from: int | None = None  # set by whatever restores a checkpoint in on_fit_start

    @property
    def data_parallel_size(self) -> int:
        return dist.get_world_size(group=self.dp_group)

    @property
    def global_batch_size(self) -> int:
        return self.settings.micro_batch_size * self.settings.accumulation_steps * self.data_parallel_size

    def fit(self) -> FitResult:
        result = None
        try:
            for callback in self.callbacks:
                callback.on_fit_start(self)
            result = self._loop()
        finally:
            for callback in self.callbacks:
                callback.on_fit_end(self, result)
        return result

    def _loop(self) -> FitResult:
        settings = self.settings
        batches = step_batches(self.dataset, settings.micro_batch_size, settings.accumulation_steps,
                               dist.get_rank(group=self.dp_group), self.data_parallel_size,
                               self.state.consumed_samples, settings.num_workers, settings.pin_memory)
        tick = time.perf_counter()
        for micro_batches in batches:
            if self.state.step >= settings.iters:
                break
            step = self.state.step + 1
            for callback in self.callbacks:
                callback.on_step_start(self, step)
            loss = self.train_step(micro_batches, self.learning_rate(self.state.step))
            self.state.step = step
            self.state.consumed_samples += self.global_batch_size
            self.timer.add(time.perf_counter() - tick)
            record: dict[str, float | int | None] = {}
            for callback in self.callbacks:
                callback.on_step_end(self, step, loss, record)
            if record:
                for callback in self.callbacks:
                    callback.on_record(self, step, record)
            reasons = [callback.stop_reason(self, step) for callback in self.callbacks]  # each may be collective
            stop = next((reason for reason in reasons if reason is not None), None)
            for callback in self.callbacks:
                callback.after_step(self, step, stop)
            if stop and step < settings.iters:
                return FitResult(stop, step, self.resumed_from)
            tick = time.perf_counter()
        return FitResult("finished", self.state.step, self.resumed_from)

    def train_step(self, micro_batches: Iterable[dict[str, torch.Tensor]], lr: float) -> float:
        """One optimizer step over the micro-batches; returns the loss averaged over data parallel."""
        for group in self.engine.optimizer.param_groups:
            group["lr"] = lr
        step = self.state.step + 1

        def before_update(loss: float) -> None:
            for callback in self.callbacks:
                callback.before_update(self, step, loss)

        return self.steps.train(self, list(micro_batches), before_update)

    def evaluate_loss(self, batches: Sequence[dict[str, torch.Tensor]]) -> float:
        """The mean loss of `batches` without gradients (in eval mode), averaged over data parallel."""
        self.engine.eval()
        try:
            with torch.no_grad():
                return self.steps.evaluate(self, batches)
        finally:
            self.engine.train()

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: value.to(self.engine.device) for key, value in batch.items()}

    def mean_over_data_parallel(self, value: torch.Tensor) -> float:
        """The mean of a per-rank scalar over the data-parallel ranks (reduces `value` in place)."""
        dist.all_reduce(value, group=self.dp_group)
        return value.item() / self.data_parallel_size
