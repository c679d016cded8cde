"""Every `log_interval` steps: the loss, learning rate, gradient norm, loss scale, throughput, model TFLOP/s,
MFU and memory of the interval since the last record."""

from __future__ import annotations

import psutil
import torch
from deepspeed.accelerator import get_accelerator

from roots_scale.training.flops import FlopsMeter
from roots_scale.training.grad_norm import global_grad_norm
from roots_scale.training.trainer import Callback, Trainer


class Throughput(Callback):
    def __init__(self, log_interval: int, seq_length: int, flops: FlopsMeter) -> None:
        self.log_interval = log_interval
        self.seq_length = seq_length
        self.flops = flops
        self._zero0_grad_norm: torch.Tensor | None = None  # measured here where DeepSpeed keeps none

    def _logs(self, trainer: Trainer, step: int) -> bool:
        return step % self.log_interval == 0 or step == trainer.settings.iters

    def before_update(self, trainer: Trainer, step: int, loss: float) -> None:
        self._zero0_grad_norm = None
        if self._logs(trainer, step) and trainer.engine.zero_optimization_stage() == 0:
            # DeepSpeed keeps no global norm at ZeRO-0 with a client optimizer: take the pre-clip norm of
            # the (already data-parallel-reduced) gradients, counting TP-split weights once.
            self._zero0_grad_norm = global_grad_norm(trainer.engine.module.parameters(),
                                                     trainer.engine.mpu.get_tensor_model_parallel_group())

    def on_step_end(self, trainer: Trainer, step: int, loss: float, record: dict) -> None:
        if not self._logs(trainer, step):
            return
        engine = trainer.engine
        seconds, steps = trainer.timer.take_interval()
        samples_per_sec = steps * trainer.global_batch_size / max(seconds, 1e-9)
        tokens_per_sec = samples_per_sec * self.seq_length
        grad_norm = self._zero0_grad_norm if self._zero0_grad_norm is not None else engine.get_global_grad_norm()
        record.update({
            "loss": loss,
            "lr": trainer.learning_rate(step - 1),
            "grad_norm": _as_float(grad_norm),
            "loss_scale": engine.optimizer.loss_scale if engine.fp16_enabled() else None,
            "consumed_samples": trainer.state.consumed_samples,
            "skipped_steps": trainer.state.skipped_steps,
            "tokens_per_sec": tokens_per_sec,
            "samples_per_sec": samples_per_sec,
            "tflops_per_device": self.flops.flops_per_device(tokens_per_sec) / 1e12,
            "mfu": self.flops.mfu(tokens_per_sec),
            "mem_gb": memory_gb(),
        })


def memory_gb() -> float:
    """Peak accelerator memory allocated by this process in GB, or its resident set size on CPU."""
    accelerator = get_accelerator()
    if accelerator.device_name() == "cpu":
        return psutil.Process().memory_info().rss / 1e9
    return accelerator.max_memory_allocated() / 1e9


def _as_float(value) -> float | None:
    if value is None:
        return None
    return float(value.item() if isinstance(value, torch.Tensor) else value)
