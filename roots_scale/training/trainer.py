"""The training loop: micro-batches through the DeepSpeed engine, logging, validation, saving, resuming."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import psutil
import torch
import torch.distributed as dist

from roots_scale.config import Config
from roots_scale.data.loader import SampleSource, step_batches
from roots_scale.training.grad_norm import global_grad_norm
from roots_scale.training.checkpoint import CheckpointManager, capture_rng_state, restore_rng_state
from roots_scale.training.flops import FlopsMeter
from roots_scale.training.metrics import MetricsLogger
from roots_scale.training.schedules import learning_rate

MAX_PPL_LOSS = 20.0  # perplexity is reported as exp(min(loss, 20)), as Megatron does: finite for a diverged run


@dataclass
class TrainState:
    """What the loop needs to continue exactly where it stopped."""

    step: int = 0  # optimizer steps completed
    consumed_samples: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"step": self.step, "consumed_samples": self.consumed_samples}


@dataclass(frozen=True)
class FitResult:
    """How `fit` ended: `finished` (reached train.iters), `exit_interval` or `exit_duration`; and the last step."""

    reason: str
    step: int
    resumed_from: int | None


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

    @property
    def global_batch_size(self) -> int:
        return self.micro_batch_size * self.accumulation_steps * dist.get_world_size(group=self.dp_group)

    def resume(self) -> int | None:
        """Load `latest` if there is one; return the step resumed from."""
        saved = self.checkpoints.load_latest(self.engine)
        if saved is None:
            return None
        self.state = TrainState(step=int(saved["step"]), consumed_samples=int(saved["consumed_samples"]))
        self.metrics.truncate_after(self.state.step)
        return self.state.step

    def fit(self) -> FitResult:
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
                self.checkpoints.save(self.engine, step, self.state.to_dict())
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
        """`exit_interval` or `exit_duration` when the run should save and stop after `step`; the same on every rank."""
        train = self.cfg.train
        if train.exit_interval is not None and step % train.exit_interval == 0:
            return "exit_interval"
        if train.exit_duration_minutes is not None and self._out_of_time(train.exit_duration_minutes):
            return "exit_duration"
        return None

    def _out_of_time(self, budget_minutes: float) -> bool:
        """Rank 0 decides whether one more (average) step would pass the budget; every rank gets its verdict."""
        elapsed = time.perf_counter() - self.started_at
        next_step = self.timer.run_seconds / self.timer.run_steps
        verdict = torch.tensor(int(elapsed + next_step > 60.0 * budget_minutes), device=self.engine.device)
        dist.broadcast(verdict, src=0)
        return bool(verdict.item())

    def train_step(self, micro_batches: list[dict[str, torch.Tensor]], lr: float,
                   measure_grad_norm: bool = False) -> float:
        """One optimizer step over the micro-batches; returns the loss averaged over data parallel."""
        for group in self.engine.optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=self.engine.device)
        self._zero0_grad_norm = None
        for index, batch in enumerate(micro_batches):
            loss = self.engine(**self._to_device(batch))
            self.engine.backward(loss)
            last = index == len(micro_batches) - 1
            if last and measure_grad_norm and self.engine.zero_optimization_stage() == 0:
                # DeepSpeed keeps no global norm at ZeRO-0 with a client optimizer: take the pre-clip
                # norm of the (already data-parallel-reduced) gradients, counting TP-split weights once.
                self._zero0_grad_norm = global_grad_norm(
                    self.engine.module.parameters(), self.engine.mpu.get_tensor_model_parallel_group())
            self.engine.step()
            total += loss.detach().float()
        return self._mean_over_data_parallel(total / len(micro_batches))

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
