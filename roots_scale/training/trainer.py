"""The training loop: micro-batches through the DeepSpeed engine, logging, validation, saving, resuming."""

from __future__ import annotations

import math
import signal
import statistics
import time
from collections import deque
from dataclasses import dataclass, field

import psutil
import torch
import torch.distributed as dist

from roots_scale.config import Config
from roots_scale.data.loader import SampleSource, step_batches
from roots_scale.training.grad_norm import global_grad_norm
from roots_scale.training.layout_free import base_optimizer
from roots_scale.training.checkpoint import CheckpointManager, capture_rng_state, restore_rng_state
from roots_scale.training.flops import FlopsMeter
from roots_scale.training.metrics import MetricsLogger
from roots_scale.training.schedules import learning_rate

MAX_PPL_LOSS = 20.0  # perplexity is reported as exp(min(loss, 20)), as Megatron does: finite for a diverged run
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # what SLURM sends before a time limit or a preemption
REQUEUE_REASONS = ("preempted", "exit_duration")  # stops after which the job should be requeued to continue


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. the loss stays non-finite); the last checkpoint is left intact."""


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


class PreemptionSignals:
    """Records SIGTERM / SIGUSR1 instead of dying, so the loop can finish its step, save and exit."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "PreemptionSignals":
        for number in PREEMPTION_SIGNALS:
            self._previous[number] = signal.signal(number, self._record)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _record(self, number: int, frame) -> None:
        self.received = number


@dataclass
class UpdateGuard:
    """Skips an optimizer update whose loss is non-finite or (optionally) a spike, by hiding the gradients
    from the optimizer: a skipped step moves no weight and no Adam moment, on every rank alike."""

    max_nonfinite: int
    spike_zscore: float | None
    history: deque = field(default_factory=deque)
    consecutive_nonfinite: int = 0
    armed: str | None = None  # why the next optimizer.step() must not update

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.register_step_pre_hook(self._hide_gradients)

    def _hide_gradients(self, optimizer, args, kwargs) -> None:
        if self.armed is not None:
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.grad = None  # torch's AdamW leaves a parameter without a gradient untouched

    def judge(self, loss: float, window: int) -> str | None:
        """`nonfinite`, `loss_spike` or None for the step whose data-parallel mean loss is `loss`."""
        if not math.isfinite(loss):
            self.consecutive_nonfinite += 1
            self.armed = "nonfinite"
            return self.armed
        self.consecutive_nonfinite = 0
        self.armed = None
        if self.spike_zscore is not None and len(self.history) >= min(window, 10):
            mean, std = statistics.fmean(self.history), statistics.pstdev(self.history)
            if std > 0 and (loss - mean) / std > self.spike_zscore:
                self.armed = "loss_spike"
                return self.armed
        self.history.append(loss)
        while len(self.history) > window:
            self.history.popleft()
        return None


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


class Trainer:
    """Runs optimizer steps until `train.iters`, checkpointing on the configured cadence."""

    def __init__(self, cfg: Config, engine, dataset: SampleSource, checkpoints: CheckpointManager,
                 metrics: MetricsLogger, data_parallel_group, micro_batch_size: int, accumulation_steps: int,
                 flops: FlopsMeter, valid_dataset: SampleSource | None = None, pin_memory: bool = False,
                 started_at: float | None = None) -> None:
        self.cfg = cfg
        self.engine = engine
        self.dataset = dataset
        self.valid_dataset = valid_dataset
        self.checkpoints = checkpoints
        self.metrics = metrics
        self.dp_group = data_parallel_group
        self.micro_batch_size = micro_batch_size
        self.accumulation_steps = accumulation_steps
        self.flops = flops
        self.pin_memory = pin_memory
        self.started_at = time.perf_counter() if started_at is None else started_at  # for exit_duration_minutes
        self.state = TrainState()
        self.timer = StepTimer()
        self._valid_batches: list[dict[str, torch.Tensor]] | None = None
        self._zero0_grad_norm: torch.Tensor | None = None  # measured by the trainer where DeepSpeed keeps none
        self.guard = UpdateGuard(cfg.train.max_nonfinite_steps, cfg.train.loss_spike_zscore)
        self.guard.attach(base_optimizer(engine))
        self.signals = PreemptionSignals()

    @property
    def global_batch_size(self) -> int:
        return self.micro_batch_size * self.accumulation_steps * dist.get_world_size(group=self.dp_group)

    def resume(self) -> int | None:
        """Load `latest` if there is one; return the step resumed from."""
        saved = self.checkpoints.load_latest(self.engine)
        if saved is None:
            return None
        self.state = TrainState(step=int(saved["step"]), consumed_samples=int(saved["consumed_samples"]),
                                skipped_steps=int(saved.get("skipped_steps", 0)))
        self.metrics.truncate_after(self.state.step)
        return self.state.step

    def checkpoint_state(self) -> dict[str, object]:
        """The train state plus the samples consumed from each dataset of a blend."""
        per_dataset = getattr(self.dataset, "consumed_per_dataset", None)
        consumed = per_dataset(self.state.consumed_samples) if per_dataset else [self.state.consumed_samples]
        return {**self.state.to_dict(), "consumed_per_dataset": consumed}

    def fit(self) -> FitResult:
        with self.signals:
            return self._fit()

    def _fit(self) -> FitResult:
        resumed_from = self.resume()
        train = self.cfg.train
        batches = step_batches(self.dataset, self.micro_batch_size, self.accumulation_steps,
                               dist.get_rank(group=self.dp_group), dist.get_world_size(group=self.dp_group),
                               self.state.consumed_samples, self.cfg.data.num_workers, self.pin_memory)
        tick = time.perf_counter()
        for micro_batches in batches:
            if self.state.step >= train.iters:
                break
            lr = learning_rate(self.state.step, train.iters, self.cfg.optimizer)
            logging = (self.state.step + 1) % train.log_interval == 0 or self.state.step + 1 == train.iters
            loss = self.train_step(micro_batches, lr, measure_grad_norm=logging)
            self.state.step += 1
            self.state.consumed_samples += self.global_batch_size
            self.timer.add(time.perf_counter() - tick)
            step = self.state.step
            record: dict[str, float | int | None] = {}
            if logging:
                record.update(self._training_record(loss, lr))
            if train.eval_interval is not None and step % train.eval_interval == 0:
                record.update(self.evaluate())
            if record:
                self.metrics.log(step, train.iters, record)
            stop = self._stop_reason(step)
            if step % train.save_interval == 0 or step == train.iters or stop:
                self.checkpoints.save(self.engine, step, self.checkpoint_state())
            if stop and step < train.iters:
                return FitResult(stop, step, resumed_from)
            tick = time.perf_counter()
        return FitResult("finished", self.state.step, resumed_from)

    def _training_record(self, loss: float, lr: float) -> dict[str, float | int | None]:
        """Loss, optimizer state and the interval's throughput, FLOP rate and memory."""
        seconds, steps = self.timer.take_interval()
        samples_per_sec = steps * self.global_batch_size / max(seconds, 1e-9)
        tokens_per_sec = samples_per_sec * self.cfg.model.seq_length
        return {
            "loss": loss,
            "lr": lr,
            "grad_norm": _as_float(self._zero0_grad_norm if self._zero0_grad_norm is not None
                                   else self.engine.get_global_grad_norm()),
            "loss_scale": self.engine.optimizer.loss_scale if self.engine.fp16_enabled() else None,
            "consumed_samples": self.state.consumed_samples,
            "skipped_steps": self.state.skipped_steps,
            "tokens_per_sec": tokens_per_sec,
            "samples_per_sec": samples_per_sec,
            "tflops_per_device": self.flops.flops_per_device(tokens_per_sec) / 1e12,
            "mfu": self.flops.mfu(tokens_per_sec),
            "mem_gb": memory_gb(),
        }

    def evaluate(self) -> dict[str, float]:
        """Validation loss and perplexity on a fixed set of batches, averaged over data parallel.

        Runs in eval mode without gradients, and puts the RNG state back afterwards, so a run with
        validation trains exactly as one without.
        """
        rng_state = capture_rng_state()  # the loader's iterator draws a seed from torch's generator
        if self._valid_batches is None:
            self._valid_batches = next(step_batches(
                self.valid_dataset, self.micro_batch_size, self.cfg.train.eval_iters,
                dist.get_rank(group=self.dp_group), dist.get_world_size(group=self.dp_group)))
        self.engine.eval()
        try:
            with torch.no_grad():
                losses = [self.engine(**self._to_device(batch)).float() for batch in self._valid_batches]
        finally:
            self.engine.train()
            restore_rng_state(rng_state)
        loss = self._mean_over_data_parallel(torch.stack(losses).mean())
        return {"valid_loss": loss, "valid_ppl": math.exp(min(loss, MAX_PPL_LOSS))}

    def _stop_reason(self, step: int) -> str | None:
        """Why the run should save and stop after `step` (`preempted`, `exit_duration`, `exit_interval`), or None.

        One all-reduce decides for every rank: a signal may reach only some processes, and rank 0 alone
        judges the time budget (one more average step must fit), so all ranks stop at the same step.
        """
        train = self.cfg.train
        out_of_time = False
        if train.exit_duration_minutes is not None and dist.get_rank() == 0:
            elapsed = time.perf_counter() - self.started_at
            next_step = self.timer.run_seconds / self.timer.run_steps
            out_of_time = elapsed + next_step > 60.0 * train.exit_duration_minutes
        flags = torch.tensor([int(self.signals.received is not None), int(out_of_time)], device=self.engine.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        signalled, out_of_time = (bool(v) for v in flags.tolist())
        if signalled:
            return "preempted"
        if out_of_time:
            return "exit_duration"
        if train.exit_interval is not None and step % train.exit_interval == 0:
            return "exit_interval"
        return None

    def train_step(self, micro_batches: list[dict[str, torch.Tensor]], lr: float,
                   measure_grad_norm: bool = False) -> float:
        """One optimizer step over the micro-batches; returns the loss averaged over data parallel."""
        for group in self.engine.optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=self.engine.device)
        self._zero0_grad_norm = None
        mean_loss = math.nan
        for index, batch in enumerate(micro_batches):
            loss = self.engine(**self._to_device(batch))
            self.engine.backward(loss)
            total += loss.detach().float()
            if index == len(micro_batches) - 1:  # before the update: the guard may veto it
                mean_loss = self._mean_over_data_parallel(total / len(micro_batches))
                self._judge_update(mean_loss)
                if measure_grad_norm and self.engine.zero_optimization_stage() == 0:
                    # DeepSpeed keeps no global norm at ZeRO-0 with a client optimizer: take the pre-clip
                    # norm of the (already data-parallel-reduced) gradients, counting TP-split weights once.
                    self._zero0_grad_norm = global_grad_norm(
                        self.engine.module.parameters(), self.engine.mpu.get_tensor_model_parallel_group())
            self.engine.step()
        self.guard.armed = None
        return mean_loss

    def _judge_update(self, mean_loss: float) -> None:
        """Count a vetoed update; stop the run when non-finite losses keep coming."""
        verdict = self.guard.judge(mean_loss, self.cfg.train.loss_spike_window)
        if verdict is None:
            return
        self.state.skipped_steps += 1
        step = self.state.step + 1
        if dist.get_rank() == 0:
            print(f"roots-train: step {step}: loss {mean_loss:.4g}, update skipped ({verdict})", flush=True)
        if self.guard.consecutive_nonfinite >= self.cfg.train.max_nonfinite_steps:
            latest = self.checkpoints.latest_tag()
            raise TrainingError(
                f"the loss was non-finite for {self.guard.consecutive_nonfinite} consecutive steps (up to step "
                f"{step}; train.max_nonfinite_steps={self.cfg.train.max_nonfinite_steps}); stopped without "
                f"saving, the last checkpoint ({latest or 'none yet'}) is intact. Lower optimizer.lr, raise "
                f"optimizer.warmup_iters, or check the data around consumed sample {self.state.consumed_samples}")

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: value.to(self.engine.device) for key, value in batch.items()}

    def _mean_over_data_parallel(self, value: torch.Tensor) -> float:
        """The mean of a per-rank scalar over the data-parallel ranks (reduces `value` in place)."""
        dist.all_reduce(value, group=self.dp_group)
        return value.item() / dist.get_world_size(group=self.dp_group)


def memory_gb() -> float:
    """Peak accelerator memory allocated by this process in GB, or its resident set size on CPU."""
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    if accelerator.device_name() == "cpu":
        return psutil.Process().memory_info().rss / 1e9
    return accelerator.max_memory_allocated() / 1e9


def _as_float(value) -> float | None:
    if value is None:
        return None
    return float(value.item() if isinstance(value, torch.Tensor) else value)
