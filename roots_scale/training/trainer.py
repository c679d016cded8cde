"""The training loop: micro-batches through the DeepSpeed engine, logging, saving, resuming."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from roots_scale.config import Config
from roots_scale.data.loader import SampleSource, step_batches
from roots_scale.training.checkpoint import CheckpointManager
from roots_scale.training.metrics import MetricsLogger
from roots_scale.training.schedules import learning_rate


@dataclass
class TrainState:
    """What the loop needs to continue exactly where it stopped."""

    step: int = 0  # optimizer steps completed
    consumed_samples: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"step": self.step, "consumed_samples": self.consumed_samples}


@dataclass(frozen=True)
class FitResult:
    """How `fit` ended: `finished` (reached train.iters) or `exit_interval`; and the last step."""

    reason: str
    step: int
    resumed_from: int | None


class Trainer:
    """Runs optimizer steps until `train.iters`, checkpointing on the configured cadence."""

    def __init__(self, cfg: Config, engine, dataset: SampleSource, checkpoints: CheckpointManager,
                 metrics: MetricsLogger, data_parallel_group, micro_batch_size: int, accumulation_steps: int,
                 pin_memory: bool = False) -> None:
        self.cfg = cfg
        self.engine = engine
        self.dataset = dataset
        self.checkpoints = checkpoints
        self.metrics = metrics
        self.dp_group = data_parallel_group
        self.micro_batch_size = micro_batch_size
        self.accumulation_steps = accumulation_steps
        self.pin_memory = pin_memory
        self.state = TrainState()

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
        tokens_per_step = self.global_batch_size * self.cfg.model.seq_length
        batches = step_batches(self.dataset, self.micro_batch_size, self.accumulation_steps,
                               dist.get_rank(group=self.dp_group), dist.get_world_size(group=self.dp_group),
                               self.state.consumed_samples, self.cfg.data.num_workers, self.pin_memory)
        interval_start, interval_steps = time.perf_counter(), 0
        for micro_batches in batches:
            if self.state.step >= train.iters:
                break
            lr = learning_rate(self.state.step, train.iters, self.cfg.optimizer)
            loss = self._train_step(micro_batches, lr)
            self.state.step += 1
            self.state.consumed_samples += self.global_batch_size
            interval_steps += 1
            step = self.state.step
            if step % train.log_interval == 0 or step == train.iters:
                elapsed = time.perf_counter() - interval_start
                self.metrics.log(step, {
                    "loss": loss,
                    "lr": lr,
                    "grad_norm": _as_float(self.engine.get_global_grad_norm()),
                    "consumed_samples": self.state.consumed_samples,
                    "tokens_per_sec": interval_steps * tokens_per_step / max(elapsed, 1e-9),
                })
                interval_start, interval_steps = time.perf_counter(), 0
            exiting = train.exit_interval is not None and step % train.exit_interval == 0
            if step % train.save_interval == 0 or step == train.iters or exiting:
                self.checkpoints.save(self.engine, step, self.state.to_dict())
            if exiting and step < train.iters:
                return FitResult("exit_interval", step, resumed_from)
        return FitResult("finished", self.state.step, resumed_from)

    def _train_step(self, micro_batches: list[dict[str, torch.Tensor]], lr: float) -> float:
        """One optimizer step over the micro-batches; returns the loss averaged over data parallel."""
        for group in self.engine.optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=self.engine.device)
        for batch in micro_batches:
            loss = self.engine(**{key: value.to(self.engine.device) for key, value in batch.items()})
            self.engine.backward(loss)
            self.engine.step()
            total += loss.detach().float()
        total /= len(micro_batches)
        dist.all_reduce(total, group=self.dp_group)
        return total.item() / dist.get_world_size(group=self.dp_group)


def _as_float(value) -> float | None:
    if value is None:
        return None
    return float(value.item() if isinstance(value, torch.Tensor) else value)
