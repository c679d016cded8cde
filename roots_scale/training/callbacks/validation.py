"""Every `eval_interval` steps: validation loss and perplexity on one fixed set of batches per data-parallel rank.

Runs in eval mode without gradients and puts the RNG state back afterwards, so a run with validation
trains exactly as one without.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from roots_scale.checkpoint.rng import capture_rng_state, restore_rng_state
from roots_scale.data import SampleSource
from roots_scale.data.loader import step_batches
from roots_scale.training.trainer import Callback, Trainer

MAX_PPL_LOSS = 20.0  # perplexity is reported as exp(min(loss, 20)), as Megatron does: finite for a diverged run


class Validation(Callback):
    def __init__(self, dataset: SampleSource, eval_interval: int, eval_iters: int) -> None:
        self.dataset = dataset
        self.eval_interval = eval_interval
        self.eval_iters = eval_iters
        self._batches: list[dict[str, torch.Tensor]] | None = None

    def on_step_end(self, trainer: Trainer, step: int, loss: float, record: dict) -> None:
        if step % self.eval_interval == 0:
            record.update(self.evaluate(trainer))

    def evaluate(self, trainer: Trainer) -> dict[str, float]:
        rng_state = capture_rng_state()  # the loader's iterator draws a seed from torch's generator
        if self._batches is None:
            self._batches = next(step_batches(self.dataset, trainer.settings.micro_batch_size, self.eval_iters,
                                              dist.get_rank(group=trainer.dp_group), trainer.data_parallel_size))
        try:
            loss = trainer.evaluate_loss(self._batches)
        finally:
            restore_rng_state(rng_state)
        return {"valid_loss": loss, "valid_ppl": math.exp(min(loss, MAX_PPL_LOSS))}
